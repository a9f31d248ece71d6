"""A model's steering stack: what each active steering block adds where, and the forward hooks
that add it.

Every :class:`explorer.Model` owns one :class:`SteeringStack`, so steering one model never
touches another, even one of the same width in the same process. Whatever runs a model asks its
stack: a trace adds the steered read-out layer's own addition back (nnsight reads a layer's output
before forward hooks run) and a remote trace adds it inside the trace. This module knows nothing
of emotions or vectors: a block is a tensor per layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .errors import ExplorerError


@dataclass
class Steering:
    """What one steering block adds: ``deltas[layer]`` (rows, width) at token ``positions``.

    ``rows`` is 1 (the same addition for every sequence in a batch) or the batch size.
    ``in_trace`` blocks (remote models) are added inside nnsight traces, not by hooks.
    """

    name: str
    deltas: dict[int, torch.Tensor]
    positions: slice | Sequence[int] | None = None
    in_trace: bool = False
    handles: list = field(default_factory=list, repr=False)

    def signature(self) -> str:
        """A digest of exactly what is added where (part of the trace cache key)."""
        digest = hashlib.sha256()
        for layer in sorted(self.deltas):
            digest.update(f"{layer}:".encode())
            digest.update(self.deltas[layer].float().numpy().tobytes())
        digest.update(repr(self.positions).encode())
        return digest.hexdigest()[:16]

    def mask(self, n_tokens: int) -> torch.Tensor:
        """(n_tokens, 1): 1 where this block adds, over tokens 0..n-1 of one sequence."""
        mask = torch.zeros(n_tokens, 1)
        if self.positions is None:
            mask[:] = 1
        elif isinstance(self.positions, slice):
            mask[self.positions] = 1
        else:
            mask[[p for p in self.positions if 0 <= p < n_tokens]] = 1
        return mask


class SteeringStack:
    """The steering blocks active on one model, innermost last."""

    def __init__(self) -> None:
        self._blocks: list[Steering] = []
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._blocks)

    def __iter__(self) -> Iterator[Steering]:
        return iter(list(self._blocks))

    def describe(self) -> str:
        """'none', or the names of the active blocks joined by ' + '."""
        return " + ".join(s.name for s in self._blocks) or "none"

    def signature(self) -> str:
        """'' when nothing is steered, else a digest of every active block."""
        return "+".join(s.signature() for s in self._blocks)

    def in_trace_layers(self) -> set[int]:
        """Layers that an nnsight trace must steer itself (remote models)."""
        return {layer for s in self._blocks if s.in_trace for layer in s.deltas}

    def added(self, layer: int, n_tokens: int, in_trace: bool = False) -> torch.Tensor | None:
        """What the active blocks add to ``layer``'s output over tokens 0..n-1 of one sequence,
        (n_tokens, width); None when nothing is steered there. ``in_trace`` selects the blocks an
        nnsight trace adds itself (True) or the hooked ones (False)."""
        total = None
        for s in self._blocks:
            if layer not in s.deltas or s.in_trace != in_trace:
                continue
            delta = s.deltas[layer]
            if delta.shape[0] != 1:
                raise ExplorerError("steer: a batched steering block cannot be read out in a trace")
            part = s.mask(n_tokens) * delta.float()
            total = part if total is None else total + part
        return total

    @contextlib.contextmanager
    def installed(self, layers: torch.nn.ModuleList, steering: Steering) -> Iterator[Steering]:
        """Push ``steering`` for the duration of the block, hooking ``layers`` unless it is an
        in-trace block; the hooks and the entry are removed however the block ends."""
        with self._lock:
            for layer in [] if steering.in_trace else steering.deltas:
                module = layers[layer]
                # prepend: readers (nnsight, output_hidden_states, other hooks) see the steered stream
                handle = module.register_forward_hook(_hook(steering, layer), with_kwargs=True, prepend=True)
                steering.handles.append(handle)
            self._blocks.append(steering)
        try:
            yield steering
        finally:
            with self._lock:
                for handle in steering.handles:
                    handle.remove()
                steering.handles.clear()
                if steering in self._blocks:
                    self._blocks.remove(steering)


def apply_in_trace(envoy, extra: torch.Tensor) -> None:
    """Inside an nnsight trace: add ``extra`` (tokens, width) to a decoder layer's output."""
    output = envoy.output
    if isinstance(output, tuple):
        envoy.output = (output[0] + extra[None].to(output[0].dtype), *output[1:])
    else:
        envoy.output = output + extra[None].to(output.dtype)


def _hook(steering: Steering, layer: int):
    def add(module, args, kwargs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        delta = steering.deltas[layer].to(hidden.dtype)
        if delta.shape[0] not in (1, hidden.shape[0]):
            raise ExplorerError(f"steer: {delta.shape[0]} steering rows for a batch of {hidden.shape[0]}")
        add_to = delta[:, None, :]
        if steering.positions is None:
            hidden = hidden + add_to
        else:
            absolute = kwargs.get("cache_position")
            if absolute is None:
                absolute = torch.arange(hidden.shape[1])
            wanted = steering.mask(int(absolute.max()) + 1)[:, 0].bool()
            mask = wanted[absolute.long()].to(hidden.dtype)[None, :, None]
            hidden = hidden + add_to * mask
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    return add
