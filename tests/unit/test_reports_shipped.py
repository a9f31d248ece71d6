"""Every shipped vectors report (explorer/data/reports/MODEL.json) belongs to the vector file shipped
beside it and was made by the current rules: its geometry recomputes from that file without the
model, and its generalisation tables cover corpus v2 with a floor beside every number."""

import numpy as np
import pytest

import explorer as ex
from explorer import validation
from explorer.corpus import load_corpus
from explorer.models import default_layer
from explorer.vectors import pca_scores, shipped_path

REPORTS = sorted(p.stem for p in validation.REPORTS_DIR.glob("*.json"))


@pytest.mark.parametrize("model_name", REPORTS)
def test_the_report_recomputes_from_the_shipped_vectors(model_name):
    report = ex.load_report(model_name)
    entry = ex.ZOO[model_name]
    vectors = ex.EmotionVectors.load(shipped_path(model_name))
    rule = default_layer(entry.n_layers)
    assert report["model"] == model_name and report["rule_layer"] == rule
    assert report["stories"] == len(load_corpus().stories) and report["emotions"] == len(vectors) == 40
    assert [row["layer"] for row in report["per_layer"]] == list(range(entry.n_layers))
    # the valence probe at the rule layer, recomputed from the shipped file with today's probe
    norms = validation.norms_for(vectors.emotions)
    matrix = vectors.at(rule)[[vectors.index(e) for e in norms.index]].double().numpy()
    expected = validation.probe_r(matrix, norms["valence"].to_numpy())
    assert report["at_rule_layer"]["valence_probe_r"] == pytest.approx(expected, abs=1e-6)
    scores, _ = pca_scores(matrix, 2)
    pc1 = abs(np.corrcoef(scores[:, 0], norms["valence"].to_numpy())[0, 1])
    assert report["at_rule_layer"]["pc1_valence_r"] == pytest.approx(pc1, abs=1e-6)


@pytest.mark.parametrize("model_name", REPORTS)
def test_every_generalisation_number_has_its_floors(model_name):
    at_rule = ex.load_report(model_name)["at_rule_layer"]
    for scheme in ("loro", "topics"):
        real, lexical = at_rule[f"{scheme}_nearest"], at_rule[f"{scheme}_nearest_lexical"]
        shuffled = at_rule[f"{scheme}_nearest_shuffled"]
        assert 0 < shuffled < 0.1 < lexical < 1 and 0 < real <= 1
    assert 0 < at_rule["loro_probe_shuffled"] < 0.1 and 0 < at_rule["loro_probe_lexical"] < 1
    # the probe was fitted at the rule layer (the report's --probe-layers always include it)
    assert np.isfinite(at_rule["loro_probe"]) and np.isfinite(at_rule["topics_probe"])


def test_every_packaged_model_ships_a_report():
    assert REPORTS == sorted(ex.ZOO)
