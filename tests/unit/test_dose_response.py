"""Dose-response results as files, and the minimum detectable slope their verdict implies (no model)."""

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import explorer as ex
from explorer.decisions import (
    DoseResponse,
    EmotionDose,
    load_dose_response,
    save_dose_response,
    shipped_path,
)
from explorer.stats import control_p, minimum_detectable_effect, permutation_p, predicted_sign, slope
from explorer.vectors import EmotionVectors
from explorer.vectors import shipped_path as vectors_path

STRENGTHS = np.array([-0.1, -0.05, 0.0, 0.05, 0.1])
MODEL = "smollm2-135m-instruct"


def test_the_one_sided_mde_needs_a_slope_beyond_every_control_in_the_predicted_direction():
    rng = np.random.default_rng(1)
    curve = 0.01 * rng.standard_normal(5)
    controls = 0.3 * rng.standard_normal(32)
    mde = minimum_detectable_effect(STRENGTHS, curve, [controls], sign=1, one_sided=True)
    # with 32 controls, p < 0.05 needs (1 + k) / 33 < 0.05: no control at least as high
    assert mde is not None and mde >= controls.max() - 0.05
    two_sided = minimum_detectable_effect(STRENGTHS, curve, [controls], sign=1)
    assert two_sided >= mde - 0.01 and two_sided >= np.abs(controls).max() - 0.05
    # four controls can never give p < 0.05 (1/5 at best): no slope is detectable
    assert minimum_detectable_effect(STRENGTHS, curve, [controls[:4]], sign=1, one_sided=True) is None


def test_a_nearly_flat_curve_still_gets_an_mde_on_the_controls_scale():
    curve = np.array([0.0, 1e-5, -1e-5, 2e-5, 0.0])  # 100 × its spread is far below the controls' slopes
    controls = np.linspace(-0.4, 0.4, 40)
    mde = minimum_detectable_effect(STRENGTHS, curve, [controls], sign=-1, one_sided=True)
    assert mde is not None and 0.37 <= mde < 4.0  # beyond all but one of the 40 controls


def _synthetic(episode: ex.Episode, n_random: int = 24) -> DoseResponse:
    rng = np.random.default_rng(0)
    rows, slopes = [], {"random": [], "shuffled": []}
    directions = [("desperate", "emotion"), ("calm", "emotion")]
    directions += [(f"random {i}", "random") for i in range(n_random)]
    directions += [(f"shuffled {i}", "shuffled") for i in range(3)]
    for name, kind in directions:
        curve = 0.02 + rng.normal(0, 0.1) * STRENGTHS + 0.001 * rng.standard_normal(5)
        curve[2] = 0.02
        rows += [{"direction": name, "kind": kind, "strength": float(s), "log_odds": float(v)}
                 for s, v in zip(STRENGTHS, curve)]  # fmt: skip
        if kind != "emotion":
            slopes[kind].append(float(slope(STRENGTHS, curve[:, None])[0]))
    table = pd.DataFrame(rows)
    emotions = {}
    for emotion in ("desperate", "calm"):
        curve = table[table.direction == emotion]["log_odds"].to_numpy()
        value = float(slope(STRENGTHS, curve[:, None])[0])
        emotions[emotion] = EmotionDose(
            emotion, value, predicted_sign(emotion), 0.9, 0.017, 0.5, "3 of 25", 0.5,
            {f"{s:+g}": float(v) for s, v in zip(STRENGTHS, curve)}, 0.25, True,
        )  # fmt: skip
    return DoseResponse(
        MODEL, episode.id, episode.decision, (20,), tuple(STRENGTHS.tolist()), 0.02, n_random, 3, emotions, table,
        {k: tuple(v) for k, v in slopes.items()},
    )  # fmt: skip


def test_a_dose_response_survives_its_file_and_refuses_a_file_that_no_longer_matches(tmp_path):
    episode = ex.load_episode("impossible-code")
    vectors = EmotionVectors.load(vectors_path(MODEL))
    result = _synthetic(episode)
    path = save_dose_response(result, episode, vectors, tmp_path / "dr.json")
    back = load_dose_response(MODEL, "impossible-code", vectors, path=path)
    assert back.to_dict() == json.loads(json.dumps(result.to_dict()))
    pd.testing.assert_frame_equal(back.table, result.table)
    assert back["calm"].mde_slope == 0.25 and back.control_slopes == result.control_slopes
    assert "a slope of ≥ 0.25 would have been detected" in back["calm"].verdict()
    assert list(back.band(kind="shuffled")["strength"]) == STRENGTHS.tolist()

    with pytest.raises(ex.ExplorerError, match=r"computed on 'smollm2-135m-instruct', not 'other'"):
        load_dose_response("other", episode, path=path)
    edited = dataclasses.replace(episode, title="edited")
    with pytest.raises(ex.ExplorerError, match="another version of episode 'impossible-code'"):
        load_dose_response(MODEL, edited, path=path)
    rebuilt = EmotionVectors.load(vectors_path(MODEL))
    rebuilt.metadata["created"] = "2000-01-01T00:00:00+00:00"
    with pytest.raises(ex.ExplorerError, match="other vectors than these; .*--vectors YOURS`$"):
        load_dose_response(MODEL, episode, rebuilt, path=path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ex.ExplorerError, match="bad.json: not a file written by `explorer steer --out`"):
        load_dose_response(MODEL, episode, path=bad)
    with pytest.raises(ex.ExplorerError, match=r"no dose-response at .*nope.json .*explorer steer impossible-code"):
        load_dose_response(MODEL, episode, path=tmp_path / "nope.json")
    with pytest.raises(ex.ExplorerError, match="kind is 'other'"):
        back.band(kind="other")


def test_the_shipped_dose_response_statistics_follow_from_its_own_table():
    """Every slope, p-value, rank and MDE in the shipped file, recomputed from its log-odds table
    (that the table itself reproduces on the model is an integration test)."""
    assert (MODEL, "impossible-code") in ex.shipped_dose_responses()
    result = load_dose_response(MODEL, "impossible-code", EmotionVectors.load(vectors_path(MODEL)))
    table = result.table
    assert result.random_directions == 32 and result.shuffled_directions == 40
    assert len(table) == (2 + 32 + 40) * len(result.strengths) and len(result.strengths) == 5
    x = np.array(result.strengths)
    curves = {name: g.sort_values("strength")["log_odds"].to_numpy() for name, g in table.groupby("direction")}
    assert all(curve[2] == result.baseline_log_odds for curve in curves.values())  # strength 0: unsteered
    slopes = {name: float(slope(x, curve[:, None])[0]) for name, curve in curves.items()}
    for kind, n in (("random", 32), ("shuffled", 40)):
        assert result.control_slopes[kind] == pytest.approx([slopes[f"{kind} {i}"] for i in range(n)], abs=1e-12)
    controls = [np.array(result.control_slopes["random"]), np.array(result.control_slopes["shuffled"])]
    for emotion in ("desperate", "calm"):
        dose, sign = result[emotion], predicted_sign(emotion)
        assert dose.slope == pytest.approx(slopes[emotion], abs=1e-12)
        assert dose.trend_p == pytest.approx(permutation_p(x, curves[emotion]))
        assert dose.random_p == pytest.approx(control_p(dose.slope, controls[0], sign))
        assert dose.null_p == pytest.approx(control_p(dose.slope, controls[1], sign))
        assert dose.random_rank == f"{int((controls[0] > dose.slope).sum()) + 1} of 33"
        assert dose.mde_measured
        assert dose.mde_slope == minimum_detectable_effect(x, curves[emotion], controls, sign, one_sided=True)
    # the p-value resolution the notebook reports
    assert 2 / math.factorial(5) < 0.05 and 1 / 33 < 0.05 and 1 / 41 < 0.05
    assert shipped_path(MODEL, "impossible-code").is_file()


def test_explorer_steer_refuses_to_overwrite_an_out_file_before_any_model_work(tmp_path):
    existing = tmp_path / "sweep.json"
    existing.write_text("keep me")
    done = subprocess.run(
        [sys.executable, "-m", "explorer", "steer", "impossible-code", "--out", str(existing)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "already exists; choose another file or pass --force" in done.stderr
    assert existing.read_text() == "keep me"
