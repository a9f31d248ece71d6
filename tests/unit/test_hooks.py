"""The steering stack on tiny torch layers built in code: what is added, where, and to whom."""

import torch

from explorer.hooks import Steering, SteeringStack


class Layer(torch.nn.Module):
    def forward(self, x):
        return x * 1.0


def layers(n=3):
    return torch.nn.ModuleList(Layer() for _ in range(n))


def run(modules, x):
    for module in modules:
        x = module(x)
    return x


def test_a_block_adds_its_delta_and_leaves_nothing_behind():
    modules, stack = layers(), SteeringStack()
    x = torch.zeros(1, 5, 4)
    delta = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    with stack.installed(modules, Steering("d", {1: delta})):
        assert stack.describe() == "d" and stack.signature()
        out = run(modules, x)
        added = stack.added(1, 5)
    assert torch.equal(out, delta.expand(1, 5, 4))
    assert torch.equal(added, delta.expand(5, 4))
    assert torch.equal(run(modules, x), x)
    assert not stack and stack.signature() == "" and all(not m._forward_hooks for m in modules)


def test_positions_limit_the_addition():
    modules, stack = layers(), SteeringStack()
    delta = torch.ones(1, 4)
    with stack.installed(modules, Steering("late", {0: delta}, positions=slice(3, None))):
        out = run(modules, torch.zeros(1, 5, 4))
        added = stack.added(0, 5)
    assert torch.equal(out[0, :3], torch.zeros(3, 4)) and torch.equal(out[0, 3:], torch.ones(2, 4))
    assert torch.equal(added[:3], torch.zeros(3, 4)) and torch.equal(added[3:], torch.ones(2, 4))


def test_two_models_of_the_same_width_never_share_steering():
    a_modules, a_stack = layers(), SteeringStack()
    b_modules, b_stack = layers(), SteeringStack()
    x = torch.zeros(1, 2, 4)
    with a_stack.installed(a_modules, Steering("a", {2: torch.ones(1, 4)})):
        assert b_stack.added(2, 2) is None and b_stack.signature() == ""
        assert torch.equal(run(b_modules, x), x)
        assert not torch.equal(run(a_modules, x), x)


def test_in_trace_blocks_hook_nothing_and_are_reported_apart():
    modules, stack = layers(), SteeringStack()
    with stack.installed(modules, Steering("remote", {1: torch.ones(1, 4)}, in_trace=True)):
        assert all(not m._forward_hooks for m in modules)
        assert stack.in_trace_layers() == {1}
        assert stack.added(1, 3) is None and torch.equal(stack.added(1, 3, in_trace=True), torch.ones(3, 4))


def test_the_signature_changes_with_what_is_added():
    one = Steering("x", {1: torch.ones(1, 4)}).signature()
    assert one == Steering("y", {1: torch.ones(1, 4)}).signature()
    assert one != Steering("x", {1: 2 * torch.ones(1, 4)}).signature()
    assert one != Steering("x", {2: torch.ones(1, 4)}).signature()
    assert one != Steering("x", {1: torch.ones(1, 4)}, positions=slice(1, None)).signature()
