"""The headline table on the real default model, and the statistics shipped for the bigger model."""

import json
import subprocess
import sys

import pandas as pd
import pytest

import explorer as ex
from explorer.headline import CONTRASTS, EMOTIONS, HEADLINE_DIR, headline, save, scan_floor, to_markdown
from explorer.models import default_layer
from explorer.vectors import shipped_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vectors(default_model):
    return ex.load_vectors(default_model)


def test_headline_rows_are_compare_results_and_survive_a_file(default_model, vectors, tmp_path):
    layer = default_model.default_layer
    rows = headline(default_model, vectors, layers=[layer])
    assert [(r["contrast"], r["emotion"]) for r in rows] == [(c, e) for c in CONTRASTS for e in EMOTIONS]
    direct = ex.compare(
        default_model, ex.load_episode("impossible-code-calm-failure"), vectors, "calm",
        control=ex.load_episode("impossible-code-control"),
    ).at()  # fmt: skip
    failure_calm = next(r for r in rows if (r["contrast"], r["emotion"]) == ("failure", "calm"))
    assert failure_calm["slope_z"] == direct.slope_z
    assert failure_calm["random_p"] == direct.random.p
    assert failure_calm["rank"] == direct.rank and failure_calm["of"] == 40
    assert failure_calm["mde_z"] == direct.mde_z and direct.mde_z > 0
    for row in rows:
        assert 0 < row["permutation_p"] <= 1 and 0 < row["random_p"] <= 1 and 0 < row["null_p"] <= 1
        # the smallest p each test can give: 6 failed attempts (2 of 720 orderings), 64 random, 40 shuffled
        assert row["permutation_min_p"] == pytest.approx(2 / 720, abs=1e-6)
        assert row["random_min_p"] == pytest.approx(1 / 65, abs=1e-6)
        assert row["null_min_p"] == pytest.approx(1 / 41, abs=1e-6)
        assert row["permutation_p"] >= row["permutation_min_p"] and row["null_p"] >= row["null_min_p"]
    assert scan_floor(rows) == pytest.approx(1 / 41, abs=1e-6)  # one layer: no correction
    table, rule = ex.load_headline(save(rows, default_model, vectors, tmp_path / "h.json"))
    assert rule == layer
    pd.testing.assert_frame_equal(table, pd.DataFrame(rows))
    assert f"| {default_model.name} | failure | calm | {failure_calm['slope_z']:+.3f} |" in to_markdown(rows, layer)
    # the shipped file (every layer, what notebook 03 reads) holds these rows at the rule layer
    shipped, rule = ex.load_headline(default_model.name)
    at_rule = shipped[shipped["layer"] == rule].set_index(["contrast", "emotion"])
    for row in rows:
        stored = at_rule.loc[(row["contrast"], row["emotion"])]
        for key in ("slope_z", "random_p", "null_p", "rank"):
            assert stored[key] == pytest.approx(row[key], rel=1e-4, abs=1e-6), (row["contrast"], row["emotion"], key)
        # another BLAS or library build moves the activations in their fourth or fifth digit: enough to
        # move one of the 720 orderings across the observed slope (one step of the permutation p), or
        # one step of the 14-step bisection on simulated power that gives the minimum detectable effect
        # (1/2**14 of a search range ~20x the effect: ~0.1%, so 0.5% allows a few); more is another result
        assert abs(stored["permutation_p"] - row["permutation_p"]) <= 1 / 720 + 1e-6, (row["contrast"], row["emotion"])
        assert stored["mde_z"] == pytest.approx(row["mde_z"], rel=5e-3), (row["contrast"], row["emotion"], "mde_z")


def test_headline_files_give_one_line_errors(tmp_path):
    with pytest.raises(ex.ExplorerError, match="no headline statistics at .*nope.json; shipped for"):
        ex.load_headline("nope")
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(ex.ExplorerError, match="bad.json: not a file written by `explorer headline --out`"):
        ex.load_headline(bad)
    done = subprocess.run(
        [sys.executable, "-m", "explorer", "headline", "--out", str(tmp_path / "missing" / "h.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "its folder does not exist" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("model_name", ex.shipped_headlines())
def test_shipped_headline_covers_every_layer_and_matches_the_shipped_vectors(model_name):
    entry = ex.ZOO[model_name]
    table, rule = ex.load_headline(model_name)
    assert rule == default_layer(entry.n_layers)
    assert len(table) == len(CONTRASTS) * len(EMOTIONS) * entry.n_layers
    assert sorted(table["layer"].unique()) == list(range(entry.n_layers))
    for column in ["permutation_p", "random_p", "null_p", "permutation_p_holm", "random_p_holm", "null_p_holm"]:
        assert table[column].between(0, 1, inclusive="right").all(), column
    assert (table["permutation_p_holm"] >= table["permutation_p"]).all()
    # the band the notebook draws agrees with the p-value: with 64 directions, a slope beyond their 95th
    # percentile of |slope| is exceeded by at most 4 of them (p <= 5/65), one inside it by at least 4
    beyond = table["slope_sd"].abs() > table["random_abs_p95"]
    assert (table.loc[beyond, "random_p"] <= 5 / 65 + 1e-6).all()
    assert (table.loc[~beyond, "random_p"] >= 5 / 65 - 1e-6).all()
    # 40 shuffled-label vectors allow p >= 1/41, so Holm over every layer can never reach 0.05
    assert scan_floor(table.to_dict("records")) == pytest.approx(min(1, entry.n_layers / 41), abs=1e-4)
    floor = min(1, entry.n_layers / 41)
    assert f"unreachable (floor {floor:.2f})" in to_markdown(table.to_dict("records"), rule)
    # every "not shown" at the rule layer states what it could have detected
    assert table.loc[table["layer"] == rule, "mde_z"].notna().all()
    record = json.loads((HEADLINE_DIR / f"{model_name}.json").read_text())
    shipped = ex.EmotionVectors.load(shipped_path(model_name)).metadata
    assert record["vectors_built"]["created"] == shipped["created"]
    assert record["vectors_built"]["model_sha256"] == entry.sha256
