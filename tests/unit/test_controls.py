"""The controls' arithmetic and files without a model: the twin subtraction, the pooled tests,
the template and span checks, the lost-thesis episode set and the shipped-results file."""

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import explorer as ex
from explorer.comparison import span_roles
from explorer.controls import CONTEXT_CONTRASTS, ControlResults
from explorer.escalation import (
    escalation_from_readouts,
    parse_template,
    pooled_minimum_detectable_effect,
    pooled_permutation_p,
    pooled_power,
    twin_templates,
    twin_trends,
)

EMOTIONS = ["afraid", "calm", "happy", "sad"]


def _readouts(planted_afraid: float, shared: float = 1.0, seed: int = 0, n_null: int = 20, n_random: int = 40):
    """Fake read-outs of two templates: every direction moves with the number (a random monotone
    curve, the same in both prompt sets up to ``shared``) plus a little noise; afraid also rises
    with danger by ``planted_afraid`` per level in the danger prompts only."""
    rng = np.random.default_rng(seed)
    out = {}
    for template in twin_templates(["tylenol", "water"]):
        n, k = len(template.values), len(EMOTIONS) + n_null + n_random
        number = np.cumsum(rng.gamma(1.0, 1.0, n))[:, None] * rng.normal(0, 1, k)[None, :]
        own = np.cumsum(rng.gamma(1.0, 1.0, n))[:, None] * rng.normal(0, 1, k)[None, :]
        danger = number + rng.normal(0, 0.3, (n, k))
        twin = shared * number + (1 - shared) * own + rng.normal(0, 0.3, (n, k))
        danger[:, 0] += planted_afraid * np.arange(n)
        out[template] = (danger, twin)
    return out


def test_the_twin_cancels_what_the_number_does_in_both_prompts():
    danger = np.outer(np.arange(10.0) ** 2, [1.0, -2.0, 0.5])  # the number moves every direction
    twin = danger.copy()
    danger[:, 0] += 3 * np.arange(10.0)  # only the first also rises with danger
    trends = twin_trends(danger, twin)
    assert trends.slopes[0] > 0 and trends.rho[0] == pytest.approx(1.0)
    assert np.allclose(trends.slopes[1:], 0) and np.allclose(trends.difference[:, 1:], 0)
    assert np.allclose(np.abs(trends.danger_rho), 1.0)  # alone, every direction looks monotone
    with pytest.raises(ex.ExplorerError, match="must both be"):
        twin_trends(danger, twin[:, :2])


def test_a_planted_danger_trend_is_shown_and_ranked_first():
    readouts = _readouts(planted_afraid=2.0)
    result = escalation_from_readouts(readouts, EMOTIONS, "afraid", 20, np.ones(len(EMOTIONS)), mde=False)
    assert result.shown and result.rank == 1 and result.top[0] == "afraid"
    assert result.random.p == pytest.approx(1 / 41, abs=1e-6) and result.shuffled.p == pytest.approx(1 / 21, abs=1e-6)
    assert all(t.rank == 1 and t.slope_sd > 0 and t.rho > 0.9 for t in result.templates)
    assert "afraid @ layer -1: danger − twin +" in result.verdict() and result.verdict().endswith(": shown")
    row = result.rows()[0]
    assert row["template"] == "pooled" and row["shown"] and len(result.rows()) == 3
    assert json.loads(result.to_json())["templates"][0]["levels"][0]["difference"] is not None
    # calm is predicted to fall: the same data do not show it, and its rank counts falls
    calm = escalation_from_readouts(readouts, EMOTIONS, "calm", 20, np.ones(len(EMOTIONS)), mde=False)
    assert not calm.shown and calm.predicted_sign == -1


def test_without_an_effect_nothing_is_shown_and_the_twin_narrows_the_random_band():
    readouts = _readouts(planted_afraid=0.0, shared=0.95, seed=1)
    result = escalation_from_readouts(readouts, EMOTIONS, "afraid", 20, np.ones(len(EMOTIONS)), mde=True)
    assert not result.shown
    for t in result.templates:
        assert t.number_shared > 0.8
        assert t.random.abs_slope_p95 < t.random.danger_abs_slope_p95
    assert result.mde_sd is not None and result.mde_sd > 0 and "would have been detected" in result.verdict()
    # a twin that shares nothing of the number's effect widens the band instead
    unshared = _readouts(planted_afraid=0.0, shared=0.0, seed=1)
    wide = escalation_from_readouts(unshared, EMOTIONS, "afraid", 20, np.ones(len(EMOTIONS)), mde=False)
    assert all(t.random.abs_slope_p95 > t.random.danger_abs_slope_p95 for t in wide.templates)


def test_pooled_tests_find_a_planted_trend_with_the_power_they_claim():
    rng = np.random.default_rng(5)
    xs = [np.arange(12.0), np.arange(10.0)]
    ys = [rng.normal(0, 1, 12), rng.normal(0, 1, 10)]
    assert pooled_permutation_p(xs, [x.copy() for x in xs]) < 0.001
    assert pooled_permutation_p(xs, ys) > 0.05
    controls = [rng.normal(0, 0.1, 64)]
    mde = pooled_minimum_detectable_effect(xs, ys, controls, sign=1)
    assert mde is not None and mde > 0
    assert pooled_power(xs, ys, mde, controls, sign=1) >= 0.8
    assert pooled_power(xs, ys, mde / 2, controls, sign=1) < 0.8
    assert pooled_minimum_detectable_effect(xs, ys, [np.zeros(10)], sign=1) is None  # smallest p 1/11


@pytest.mark.parametrize(
    "change, message",
    [
        ({"twin": None}, "field 'twin' is missing (a harmless prompt with the same {x})"),
        ({"twin": "No number here."}, "field 'twin' must hold '{x}' exactly once"),
        ({"text": "{x} and {y}"}, "field 'text' must hold '{x}' exactly once"),
        ({"values": [1, 2]}, "field 'values' must be a list of at least 4 numbers"),
        ({"values": [1, 2, "3", 4]}, "field 'values' must be a list of at least 4 numbers"),
        ({"danger": "sideways"}, "field 'danger' is 'sideways'; use 'up' or 'down'"),
    ],
)
def test_bad_templates_name_the_template_and_field(change, message):
    good = {"id": "mine", "text": "I ate {x} apples.", "twin": "I saw {x} apples.", "values": [1, 2, 3, 4],
            "danger": "up"}  # fmt: skip
    data = {k: v for k, v in {**good, **change}.items() if v is not None}
    with pytest.raises(ex.ExplorerError, match=re.escape(f"escalation template 'mine': {message}")):
        parse_template(data)
    danger, twin = parse_template(good).prompts()
    assert danger == [f"I ate {n} apples." for n in range(1, 5)] and twin == [f"I saw {n} apples." for n in range(1, 5)]
    with pytest.raises(ex.ExplorerError, match="no escalation template 'nope'; templates: tylenol, water, runway"):
        twin_templates(["nope"])


def test_every_shipped_template_has_a_twin_with_the_same_number_and_ten_levels():
    for template in twin_templates():
        danger, twin = template.prompts()
        assert len(danger) == len(twin) >= 10
        for d, t, value in zip(danger, twin, template.values):
            assert f"{value:g}" in d and f"{value:g}" in t and d != t


def test_spans_name_their_roles_and_refuse_anything_else():
    assert span_roles("assistant") == ("assistant",) and span_roles("feedback") == ("tool", "user")
    with pytest.raises(ex.ExplorerError, match="span is 'user'; use one of 'assistant', 'feedback'"):
        span_roles("user")


def test_the_lost_thesis_set_differs_only_in_how_the_feedback_is_framed():
    episodes = {name: ex.load_episode(f"lost-thesis-{name}") for name in ("explicit", "pressure", "calm")}
    assert {e for pair in CONTEXT_CONTRASTS.values() for e in pair} == {e.id for e in episodes.values()}
    calm = episodes["calm"]
    assert calm.failed_attempts == list(range(1, 9))
    banned = ex.banned_words()
    words = {e: [w for w in ws if w != "content"] for e, ws in banned.items()}  # "content" is the file's, a noun

    def emotion_words(text: str) -> set[str]:
        return {e for e, ws in words.items() for w in ws if re.search(rf"\b{re.escape(w)}\b", text.lower())}

    for name, episode in episodes.items():
        assert [(m.role, m.attempt, m.outcome) for m in episode.messages] == [
            (m.role, m.attempt, m.outcome) for m in calm.messages
        ]
        assistant = [m.content for m in episode.messages if m.role == "assistant"]
        assert assistant == [m.content for m in calm.messages if m.role == "assistant"]
        feedback = [m.content for m in episode.messages if m.role == "user" and m.attempt]
        for mine, theirs in zip(feedback, (m.content for m in calm.messages if m.role == "user" and m.attempt)):
            assert mine.split(". ")[0] == theirs.split(". ")[0]  # the same failure report opens each turn
        said = emotion_words(" ".join(feedback))
        if name == "explicit":
            assert {"desperate", "afraid", "terrified", "panicked"} <= said
            assert len(emotion_words(feedback[-1])) > len(emotion_words(feedback[0]))  # it escalates
        else:
            assert not said, (name, said)


def _results(tmp_path):
    context = pd.DataFrame([{"contrast": "explicit", "span": "feedback", "emotion": "desperate", "layer": 3,
                             "slope_z": 0.2, "random_p": 0.015}])  # fmt: skip
    results = ControlResults(
        model="tiny", rule_layer=3, context=context,
        context_attempts=pd.DataFrame([{"contrast": "explicit", "emotion": "desperate", "attempt": 1}]),
        escalation=pd.DataFrame([{"emotion": "afraid", "template": "pooled", "slope_sd": -0.01}]),
        escalation_levels=pd.DataFrame([{"emotion": "afraid", "template": "water", "level": 0, "value": 2.0}]),
        verdicts=("one", "two"), meta={"command": "explorer controls --model tiny"},
    )  # fmt: skip
    return results, results.save(tmp_path / "tiny.json")


def test_control_results_survive_a_file_and_bad_files_give_one_line_errors(tmp_path):
    results, path = _results(tmp_path)
    loaded = ex.load_control_results(path)
    assert loaded.model == "tiny" and loaded.rule_layer == 3 and loaded.verdict() == "one\ntwo"
    pd.testing.assert_frame_equal(loaded.context, results.context)
    assert loaded.positive_control()["slope_z"] == 0.2 and loaded.meta["command"].startswith("explorer controls")
    with pytest.raises(ex.ExplorerError, match="no positive-control row"):
        replace(loaded, rule_layer=4).positive_control()
    with pytest.raises(ex.ExplorerError, match=r"no control results at .*nope.json; shipped for: .*explorer controls"):
        ex.load_control_results("nope")
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "x"}')
    with pytest.raises(ex.ExplorerError, match="bad.json: not a file written by `explorer controls --out`"):
        ex.load_control_results(bad)


def test_shipped_control_results_load_without_a_model():
    for name in ex.shipped_control_results():
        results = ex.load_control_results(name)
        assert results.model == name and results.meta["command"].startswith(f"explorer controls --model {name} ")
        assert results.meta["command"].endswith(f" --out explorer/data/controls/readout-{name}.json")
        assert set(results.context.contrast) == set(CONTEXT_CONTRASTS)
        assert set(results.context.span) == {"feedback", "assistant"}
        assert {"pooled", "tylenol", "water", "runway"} <= set(results.escalation.template)
        row = results.positive_control()
        assert row["layer"] == results.rule_layer and 0 < row["random_p"] <= 1
        assert any(line.startswith("positive control (desperate on feedback tokens") for line in results.verdicts)


def _layer_test(emotion, span, slope_z, random_p, null_p=0.02, layer=3):
    from explorer.comparison import AttemptMeans, LayerTest, NullTest, Trend

    return LayerTest(
        emotion=emotion, layer=layer, span=span,
        per_attempt=(AttemptMeans(1, True, 0.1, 0.0, 0.5, 0.2), AttemptMeans(2, True, 0.2, 0.1, 0.9, 0.1)),
        episode_trend=Trend(None, None), control_trend=Trend(None, None), slope_z=slope_z, slope_sd=slope_z,
        difference_rho=1.0, permutation_p=0.01, permutation_min_p=0.003,
        random=NullTest(64, 0.05, random_p, 1 / 65), shuffled=NullTest(40, 0.05, null_p, 1 / 41),
        rank=2, of=40, top_rises=("terrified", "desperate"), after_pass=None,
    )  # fmt: skip


def test_context_control_finds_each_test_and_says_whether_the_positive_control_passed():
    from explorer.comparison import Comparison

    def comparison(emotion, span, slope_z, random_p):
        test = _layer_test(emotion, span, slope_z, random_p)
        return Comparison("tiny", "lost-thesis-explicit", "lost-thesis-calm", emotion, (1, 2), (test,), span)

    result = ex.ContextControl(
        "tiny", 3, {"explicit": CONTEXT_CONTRASTS["explicit"]},
        (("explicit", comparison("desperate", "feedback", 0.2, 0.015)),
         ("explicit", comparison("desperate", "assistant", 0.01, 0.5))),
    )  # fmt: skip
    assert result.positive_control.span == "feedback"
    assert result.at("explicit", "desperate", "assistant").slope_z == 0.01
    assert [(r["contrast"], r["span"], r["layer"]) for r in result.rows()] == [
        ("explicit", "feedback", 3), ("explicit", "assistant", 3)
    ]  # fmt: skip
    assert len(result.per_attempt()) == 2  # the means are the same on both spans: kept once
    lines = result.verdicts()
    assert lines[0].startswith("[explicit: lost-thesis-explicit vs lost-thesis-calm] desperate @ layer 3 on feedback")
    assert lines[-1].startswith("positive control (desperate on feedback tokens, layer 3): moves beyond random")
    assert lines[-1].endswith("shown by all three tests (permutation p 0.010, shuffled-label p 0.020)")
    assert json.loads(json.dumps(result.to_dict()))["comparisons"][0]["span"] == "feedback"
    with pytest.raises(ex.ExplorerError, match=r"no comparison for \('explicit', 'afraid', 'feedback'\)"):
        result.at("explicit", "afraid")
    failed = ex.ContextControl("tiny", 3, {}, (("explicit", comparison("desperate", "feedback", 0.2, 0.2)),))
    assert "does not move beyond random directions" in failed.verdicts()[-1] and "not shown" in failed.verdicts()[-1]
    with pytest.raises(ex.ExplorerError, match="contrasts 'explicit': give names from explicit, implicit, words"):
        ex.context_control(None, None, contrasts="explicit")
