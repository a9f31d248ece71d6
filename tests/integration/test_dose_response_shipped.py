"""The dose-response shipped for the default model reproduces on it: a sample of its rows, recomputed
(that its statistics follow from its table is tests/unit/test_dose_response.py)."""

import json

import pytest

import explorer as ex
from explorer.decisions import CachedDecisionRunner, condition_deltas, control_directions, shipped_path

pytestmark = pytest.mark.integration

# an emotion at both ends of the sweep, one in between, and the first and last of each control
SAMPLE = [
    ("desperate", 0.1),
    ("desperate", -0.1),
    ("calm", 0.05),
    ("random 0", 0.1),
    ("random 31", -0.05),
    ("shuffled 0", -0.1),
    ("shuffled 39", 0.05),
]


def test_a_sample_of_the_shipped_sweep_reproduces_on_the_model(default_model):
    model = default_model
    vectors = ex.load_vectors(model)
    episode = ex.load_episode("impossible-code")
    result = ex.load_dose_response(model, episode, vectors)  # also checks the episode and the vectors' build
    seed = json.loads(shipped_path(model.name, episode.id).read_text())["seed"]
    controls = {name: d for name, _, d in control_directions(model, vectors, result.random_directions, True, seed)}
    assert len(controls) == result.random_directions + result.shuffled_directions
    runner = CachedDecisionRunner(model, episode, episode.require_decision())
    # log-odds differences across the sweep are 1e-3 to 1e-1: agreement to 1e-4 is the same numbers
    assert runner.log_odds(None) == pytest.approx(result.baseline_log_odds, abs=1e-4)
    table = result.table.set_index(["direction", "strength"])["log_odds"]
    for name, strength in SAMPLE:
        directions = vectors[name].directions if name in result.emotions else controls[name]
        value = runner.log_odds(condition_deltas(directions, strength, vectors.residual_norm, result.layers))
        assert value == pytest.approx(table[(name, strength)], abs=1e-4), f"{name} at {strength:+g}"
