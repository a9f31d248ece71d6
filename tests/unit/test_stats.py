import numpy as np
import pandas as pd
import pytest

from explorer.stats import attempt_means, holm, permutation_p, slope


def test_slope_matches_numpy_polyfit():
    x = np.array([1.0, 2, 3, 4, 5])
    y = np.array([[2.0, 1], [4.1, 0.5], [5.9, 0.2], [8.2, -0.4], [9.9, -1]])
    assert np.allclose(slope(x, y), [np.polyfit(x, y[:, k], 1)[0] for k in range(2)])


def test_permutation_p_is_exact_for_small_samples():
    x = np.arange(1.0, 7)
    assert permutation_p(x, x.copy()) == pytest.approx(2 / 720)  # only the two monotone orders are as extreme
    flat = permutation_p(x, np.array([1.0, -1, 1, -1, 1, -1]))
    assert flat > 0.2


def test_holm_adjusts_in_order_and_caps_at_one():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_attempt_means_use_content_tokens_of_the_roles_asked():
    tokens = pd.DataFrame(
        {
            "role": ["system", "assistant", "assistant", "tool", "assistant"],
            "in_content": [True, False, True, True, True],
            "attempt": pd.array([None, 1, 1, 1, 2], dtype="Int64"),
        }
    )
    values = np.array([[100.0], [50.0], [1.0], [7.0], [3.0]])
    means = attempt_means(tokens, values, ["assistant"])
    assert means[0].to_dict() == {1: 1.0, 2: 3.0}  # header token (not content) and system excluded
    assert attempt_means(tokens, values, ["tool"])[0].to_dict() == {1: 7.0}


def test_headline_verdicts_need_a_rise_and_all_three_tests():
    from explorer.headline import scan_floor, shown_at_rule_layer, significant

    row = {"emotion": "desperate", "layer": 19, "slope_z": 0.08,
           "permutation_p": 0.04, "random_p": 0.015, "null_p": 0.02,
           "permutation_p_holm": 0.04, "random_p_holm": 0.015, "null_p_holm": 0.02,
           "permutation_min_p": 2 / 720, "random_min_p": 1 / 65, "null_min_p": 1 / 41}  # fmt: skip
    assert shown_at_rule_layer(row) and significant(row)
    assert not shown_at_rule_layer({**row, "slope_z": -0.08})  # a fall is not the predicted rise
    assert shown_at_rule_layer({**row, "emotion": "calm", "slope_z": -0.08})  # calm is predicted to fall
    assert not shown_at_rule_layer({**row, "emotion": "calm"})
    assert not shown_at_rule_layer({**row, "null_p": 0.146}) and not significant({**row, "null_p_holm": 0.5})
    layers = [{**row, "layer": layer} for layer in range(28)]
    assert scan_floor(layers) == pytest.approx(28 / 41)  # the shuffled-label test limits the scan
    assert scan_floor(layers[:2]) == pytest.approx(2 / 41)


def test_minimum_detectable_effect_is_what_the_test_finds_with_80_percent_power():
    from explorer.stats import minimum_detectable_effect, power_to_detect

    x = np.arange(1, 7, dtype=float)
    y = np.random.default_rng(3).normal(0, 1, 6)  # noise, no trend
    controls = [np.random.default_rng(4).normal(0, 0.2, 64)]  # null slopes in the same units
    mde = minimum_detectable_effect(x, y, controls, sign=1)
    assert mde is not None and mde > 0
    assert power_to_detect(x, y, mde, controls, sign=1) >= 0.8
    assert power_to_detect(x, y, 0.5 * mde, controls, sign=1) < 0.8
    # noisier data need a larger planted trend
    assert minimum_detectable_effect(x, 3 * y, controls, sign=1) > mde
    # nulls too coarse to reach p < 0.05 (10 directions: smallest p 1/11) make every effect undetectable
    assert minimum_detectable_effect(x, y, [np.zeros(10)], sign=1) is None


def test_a_verdict_says_why_when_no_effect_could_be_detected():
    from dataclasses import replace

    from explorer.comparison import LayerTest, NullTest, Trend

    test = LayerTest(
        emotion="desperate", layer=3, per_attempt=(), episode_trend=Trend(None, None),
        control_trend=Trend(None, None), slope_z=0.01, slope_sd=0.01, difference_rho=0.1, permutation_p=0.5,
        permutation_min_p=0.003, random=NullTest(64, 0.2, 0.4, 1 / 65), shuffled=None, rank=9, of=40,
        top_rises=(), after_pass=None,
    )  # fmt: skip
    assert test.verdict().endswith(": not shown")
    assert "however large" in replace(test, mde_measured=True).verdict()
    assert "≥ 0.250 z/attempt" in replace(test, mde_measured=True, mde_z=0.25).verdict()
