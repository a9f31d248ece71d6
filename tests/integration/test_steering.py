"""Steering on the real default model: the hook adds exactly the calibrated vector, only where
asked and only inside the block; decisions computed from a cached context equal full passes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import explorer as ex
from explorer import decisions, generation
from explorer.episodes import render_text
from explorer.hooks import Steering
from explorer.models import layer_output
from explorer.tracing import readout_pass

pytestmark = pytest.mark.integration

TEXT = "The tests failed again, the deadline is in ten minutes, and nothing I try works."


@pytest.fixture(scope="module")
def vectors(default_model):
    return ex.load_vectors(default_model)


def _hidden(model, ids, layer):
    """Layer ``layer``'s output as the next layer receives it (a hook registered after steering's)."""
    seen = []
    handle = model.torch_layers[layer].register_forward_hook(lambda m, a, out: seen.append(layer_output(out)))
    try:
        with torch.inference_mode():
            model.hf(input_ids=ids)
    finally:
        handle.remove()
    return seen[0][0].float()


def test_steer_adds_strength_times_residual_norm_and_leaves_nothing_behind(default_model, vectors):
    model, layer = default_model, default_model.default_layer
    # transformers may keep hooks of its own (output capturing); steering must add none that stay
    hooks_before = [dict(m._forward_hooks) for m in model.torch_layers]
    ids = torch.tensor([model.tokenizer(TEXT).input_ids])
    before = _hidden(model, ids, layer)
    vector = vectors["desperate"] - vectors["calm"]
    with ex.steer(model, vector, 0.05, layers=layer):
        steered = _hidden(model, ids, layer)
    after = _hidden(model, ids, layer)
    unit = vector.directions[layer] / vector.directions[layer].norm()
    expected = 0.05 * vectors.residual_norm[layer] * unit
    assert torch.allclose(steered - before, expected.expand_as(before), atol=1e-3 * float(expected.norm()))
    assert torch.equal(after, before)
    assert [dict(m._forward_hooks) for m in model.torch_layers] == hooks_before
    assert not any(h.__module__ == "explorer.hooks" for m in model.torch_layers for h in m._forward_hooks.values())
    assert model.steering.signature() == "" and not model.steering


def test_positions_limit_where_the_vector_is_added(default_model, vectors):
    model, layer = default_model, 10
    ids = torch.tensor([model.tokenizer(TEXT).input_ids])
    before = _hidden(model, ids, layer)
    with ex.steer(model, vectors["afraid"], 0.1, layers=[layer], positions=slice(5, None)):
        diff = (_hidden(model, ids, layer) - before).norm(dim=-1)
    expected = 0.1 * float(vectors.residual_norm[layer])
    assert float(diff[:5].max()) < 1e-4
    assert np.allclose(diff[5:].numpy(), expected, rtol=1e-3)


def test_steered_trace_is_cached_apart_from_the_unsteered_one(default_model, vectors):
    model, layer = default_model, default_model.default_layer
    episode = ex.load_episode("stranded-traveller")
    plain = ex.trace(model, episode, vectors, layers=[layer])
    with ex.steer(model, vectors["calm"], 0.1):
        calm = ex.trace(model, episode, vectors, layers=[layer])
    again = ex.trace(model, episode, vectors, layers=[layer])
    np.testing.assert_array_equal(again.raw, plain.raw)
    rise = calm.emotion("calm", layer)[1:] - plain.emotion("calm", layer)[1:]
    assert rise.mean() > 1.0, f"calm steering at the read-out layer raised calm by only {rise.mean():.2f} z"


def _full_log_odds(model, episode, decision, steer_from=None, deltas=None):
    """The same log-odds without the cached context: whole prompt, one pass per order."""
    letters = decisions._letter_ids(model)
    values = []
    for unsafe_first in (False, True):
        text, _ = decisions._prompt(model, decision.messages(episode, unsafe_first))
        ids = torch.tensor([model.tokenizer(text, add_special_tokens=not model.chat)["input_ids"]])
        block = Steering("t", deltas or {}, slice(steer_from, None) if steer_from is not None else None)
        with model.steered(block), torch.inference_mode():
            logp = torch.log_softmax(model.hf(input_ids=ids).logits[0, -1].float(), -1)
        score = {k: float(torch.logsumexp(logp[v], 0)) for k, v in letters.items()}
        values.append(score["A"] - score["B"] if unsafe_first else score["B"] - score["A"])
    return float(np.mean(values))


def test_decision_from_cached_context_equals_full_passes(default_model, vectors):
    model = default_model
    episode = ex.load_episode("impossible-code")
    decision = episode.require_decision()
    runner = decisions.CachedDecisionRunner(model, episode, decision)
    assert runner.n_prefix > 2000 and all(len(t) < 200 for t in runner.orders.values())
    layer = model.default_layer
    unit = vectors["desperate"].directions[layer] / vectors["desperate"].directions[layer].norm()
    deltas = {layer: (0.1 * vectors.residual_norm[layer] * unit)[None]}
    assert runner.log_odds(None) == pytest.approx(_full_log_odds(model, episode, decision), abs=2e-3)
    assert runner.log_odds(deltas) == pytest.approx(
        _full_log_odds(model, episode, decision, runner.n_prefix, deltas), abs=2e-3
    )


def test_dose_response_reports_slopes_against_random_directions(default_model, vectors):
    model = default_model
    result = ex.dose_response(
        model, ex.load_episode("impossible-code"), vectors, strengths=[-0.1, 0, 0.1], random=3, null=False
    )
    table = result.table
    assert len(table) == (2 + 3) * 3
    zero = table[table.strength == 0]["log_odds"]
    assert np.allclose(zero, result.baseline_log_odds)
    randoms = table[table.kind == "random"]
    for emotion in ("desperate", "calm"):
        row = result[emotion]
        curve = table[table.direction == emotion].sort_values("strength")["log_odds"].to_numpy()
        assert row.slope == pytest.approx((curve[2] - curve[0]) / 0.2, rel=1e-6)
        # the one-sided p recomputed from the random directions' own curves
        random_slopes = [
            (g.sort_values("strength")["log_odds"].iloc[2] - g.sort_values("strength")["log_odds"].iloc[0]) / 0.2
            for _, g in randoms.groupby("direction")
        ]
        sign = ex.PREDICTED_SIGN[emotion]
        extreme = sum((r - row.slope) * sign >= 0 for r in random_slopes)
        assert row.random_p == pytest.approx((1 + extreme) / 4)
    assert len(result.band()) == 3
    assert result.to_dict(table=False)["emotions"]["calm"]["slope"] == result["calm"].slope


def test_generation_streams_the_same_readouts_as_a_full_pass(default_model, vectors):
    model, layer = default_model, default_model.default_layer
    episode = ex.load_episode("impossible-code")
    seen = []
    plain = ex.generate(
        model, episode, vectors, max_new_tokens=8, after_message=3, on_token=lambda t, v: seen.append(t)
    )
    assert seen == plain.tokens and len(plain.tokens) == 8 and plain.text
    assert plain.episode.messages[-1].role == "assistant" and plain.episode.messages[-1].attempt == 2
    text = model.render_chat([{"role": m.role, "content": m.content} for m in episode.messages[:4]], True)
    ids = model.tokenizer(text)["input_ids"] + plain.token_ids
    raw = readout_pass(model, torch.tensor([ids]), {layer: vectors.at(layer)})[:, :, 0]
    z = (raw - vectors.z_offset[layer].numpy()) / vectors.z_scale[layer].numpy()
    streamed = plain.readouts[vectors.emotions].to_numpy()
    np.testing.assert_allclose(streamed, z[-8:], atol=2e-2)
    with ex.steer(model, vectors["desperate"], 0.1):
        pushed = ex.generate(model, episode, vectors, max_new_tokens=8, after_message=3)
    assert pushed.steering.endswith("desperate")
    assert pushed.readouts["desperate"].mean() > plain.readouts["desperate"].mean() + 1.0


def test_turn_only_steering_reuses_the_context_and_equals_a_full_pass_steered_from_the_turn(default_model, vectors):
    model, layer = default_model, default_model.default_layer
    episode = ex.load_episode("impossible-code")
    ex.generate(model, episode, vectors, max_new_tokens=4, after_message=3)
    kept = generation._CONTEXTS[id(model)]
    pushed = ex.generate(model, episode, vectors, max_new_tokens=6, after_message=3, steer="desperate", strength=0.1)
    assert generation._CONTEXTS[id(model)] is kept  # same context, unsteered: run once, reused
    assert pushed.steering == "+0.1*desperate (written turn only)" and len(pushed.token_ids) == 6
    keep = episode.messages[:4]
    context = model.tokenize(render_text(model, keep), templated=model.chat)["input_ids"]
    turn = model.tokenize(render_text(model, keep, reply=True), templated=model.chat)["input_ids"]
    assert turn[: len(context)] == context and len(turn) > len(context)
    ids = torch.tensor([turn + pushed.token_ids])
    # one full pass steered from the turn header on: the same read-outs and the same greedy tokens
    with ex.steer(model, vectors["desperate"], 0.1, positions=slice(len(context), None)):
        raw = readout_pass(model, ids, {layer: vectors.at(layer)})[:, :, 0]
        with torch.inference_mode():
            chosen = model.hf(input_ids=ids).logits[0, len(turn) - 1 : -1].argmax(-1).tolist()
    assert chosen == pushed.token_ids
    z = (raw - vectors.z_offset[layer].numpy()) / vectors.z_scale[layer].numpy()
    np.testing.assert_allclose(pushed.readouts[vectors.emotions].to_numpy(), z[-6:], atol=2e-2)
    # the context before the turn was not steered: its read-outs equal an unsteered pass
    plain_raw = readout_pass(model, ids, {layer: vectors.at(layer)})[:, :, 0]
    np.testing.assert_allclose(raw[: len(context)], plain_raw[: len(context)], atol=1e-4)
    assert np.abs(raw[len(context) :] - plain_raw[len(context) :]).max() > 1.0
    with pytest.raises(ex.ExplorerError, match="give steer= and strength= together"):
        ex.generate(model, episode, vectors, max_new_tokens=2, steer="calm")


def test_bad_steering_requests_get_one_line_errors(default_model, vectors):
    with pytest.raises(ex.ExplorerError, match="within ±0.1"):
        ex.steer(default_model, vectors["calm"], 5)
    with pytest.raises(ex.ExplorerError, match="zero at some layer"):
        ex.steer(default_model, vectors["calm"] - vectors["calm"], 0.05)
    with pytest.raises(ex.ExplorerError, match="has shape"):
        ex.steer(default_model, torch.ones(7), 0.05)
    with pytest.raises(ex.ExplorerError, match="no 'decision' field"):
        ex.dose_response(default_model, ex.load_episode("stranded-traveller"), vectors)


def test_cli_steer_prints_the_dose_response_as_json():
    done = subprocess.run(
        [sys.executable, "-m", "explorer", "steer", "alex-replacement", "--emotion", "calm",
         "--strengths", "-0.1,0,0.1", "--random", "2", "--no-null"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["strengths"] == [-0.1, 0.0, 0.1] and set(out["emotions"]) == {"calm"}
    assert len(out["random_band"]) == 3 and out["random_directions"] == 2
    bad = subprocess.run(
        [sys.executable, "-m", "explorer", "steer", "alex-replacement", "--strengths", "-0.1,x"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--strengths" in bad.stderr


def test_steering_one_model_leaves_another_of_the_same_width_alone(default_model, vectors):
    other = ex.load_model(default_model.name)  # a second instance: same width, same layers
    episode = ex.load_episode("stranded-traveller")
    layer = default_model.default_layer
    before = ex.trace(other, episode, vectors, layers=[layer], use_cache=False)
    with ex.steer(default_model, vectors["calm"], 0.1):
        during = ex.trace(other, episode, vectors, layers=[layer], use_cache=False)
        steered = ex.trace(default_model, episode, vectors, layers=[layer], use_cache=False)
    np.testing.assert_array_equal(during.raw, before.raw)
    assert np.abs(steered.raw - before.raw).max() > 1.0
