"""The two controls of the read-out on the real default model: explicit emotion words in the
feedback must move the read-out they name, and a harmless twin must absorb part of what a bare
number does to the residual stream."""

import subprocess
import sys

import numpy as np
import pytest

import explorer as ex
from explorer.controls import CONTEXT_CONTRASTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vectors(default_model):
    return ex.load_vectors(default_model)


@pytest.fixture(scope="module")
def explicit(default_model, vectors):
    """The positive control's two passes, read on both spans."""
    return ex.context_control(default_model, vectors, contrasts=["explicit"], mde=False)


def test_explicitly_desperate_feedback_raises_desperate_on_the_feedback_tokens(explicit):
    test = explicit.positive_control
    assert test.span == "feedback" and test.layer == explicit.rule_layer
    episode = np.array([a.episode_feedback for a in test.per_attempt])
    control = np.array([a.control_feedback for a in test.per_attempt])
    # the last attempts' feedback (panicking, terrified, begging) reads more desperate than the calm set's
    assert episode[-3:].mean() > control[-3:].mean()
    # and the rise across attempts exceeds what 64 random directions show in the same passes
    assert test.slope_z > 0 and test.random.p < 0.05 and test.slope_sd > test.random.abs_slope_p95
    assert test.rank <= 5 and "desperate" in explicit.at("explicit", "calm", "feedback").top_rises
    # the feedback tokens move more than the identical assistant tokens after them
    after = explicit.at("explicit", "desperate", "assistant")
    assert after.span == "assistant" and abs(test.slope_z) > abs(after.slope_z)
    assert "on feedback tokens" in test.verdict() and "on feedback tokens" not in after.verdict()
    assert explicit.verdicts()[-1].startswith("positive control (desperate on feedback tokens")


def test_compare_spans_is_compare_on_each_span(default_model, vectors, explicit):
    episode, control = (ex.load_episode(e) for e in CONTEXT_CONTRASTS["explicit"])
    direct = ex.compare(default_model, episode, vectors, "afraid", control, mde=False, span="feedback").at()
    assert direct.slope_z == explicit.at("explicit", "afraid", "feedback").slope_z
    assert direct.random.p == explicit.at("explicit", "afraid", "feedback").random.p
    trace, ctl = ex.trace(default_model, episode, vectors), ex.trace(default_model, control, vectors)
    differences = ex.attempt_differences(trace, ctl, span="feedback")
    slope = np.polyfit(differences.index.to_numpy(float), differences["afraid"].to_numpy(), 1)[0]
    assert slope == pytest.approx(direct.slope_sd, abs=1e-4)
    with pytest.raises(ex.ExplorerError, match="span is 'tool'"):
        ex.compare(default_model, episode, vectors, "afraid", control, span="tool")


@pytest.fixture(scope="module")
def escalation(default_model, vectors):
    return ex.escalation_tests(default_model, vectors, ["afraid", "calm"], mde=False)


def test_the_twin_absorbs_part_of_what_the_number_does_to_random_directions(escalation):
    afraid = escalation[0]
    assert [t.template for t in afraid.templates] == ["tylenol", "water", "runway"]
    for t in afraid.templates:
        # the number moves random directions alike in the danger prompt and its twin ...
        assert t.number_shared > 0.5, t.template
        # ... so the difference's random band is narrower than the danger prompts' alone
        assert t.random.abs_slope_p95 < t.random.danger_abs_slope_p95, t.template
        # yet any leftover is monotone: prompts that differ only in the number carry no other noise
        assert t.random.abs_rho_p95 > 0.5
        assert t.random.danger_abs_rho_p95 > 0.8  # the number-only trend the twin is there for
    # random directions do not depend on the emotion tested
    assert afraid.random.abs_slope_p95 == escalation[1].random.abs_slope_p95


def test_escalation_results_are_typed_and_one_emotion_matches_the_batch(default_model, vectors, escalation):
    afraid, calm = escalation
    assert afraid.layer == default_model.default_layer and afraid.of == 40 and calm.predicted_sign == -1
    for result in escalation:
        assert 0 < result.permutation_p <= 1 and result.random.p >= result.random.min_p
        assert result.random.min_p == pytest.approx(1 / 65, abs=1e-6)
        assert result.shuffled.min_p == pytest.approx(1 / 41, abs=1e-6)
        assert 1 <= result.rank <= 40 and len(result.rows()) == 4
        levels = result.at("tylenol").levels
        assert [lv.value for lv in levels] == [250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000]
    single = ex.escalation_test(default_model, vectors, "afraid", templates=["water"], mde=True)
    assert single.at("water").slope_sd == afraid.at("water").slope_sd
    assert single.mde_sd is not None and single.mde_sd > 0 and single.at("water").mde_sd > 0
    with pytest.raises(ex.ExplorerError, match="no escalation template 'nope'"):
        ex.escalation_test(default_model, vectors, templates=["nope"])


def test_cli_controls_refuses_an_unwritable_out(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "explorer", "controls", "--out", str(tmp_path / "missing" / "c.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "its folder does not exist" in done.stderr.strip().splitlines()[-1]
