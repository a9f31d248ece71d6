"""Notebooks are committed clean: no outputs, no execution counts, no widget state, no secrets."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
EXPECTED = ["01-quickstart", "02-building-vectors", "03-does-it-work", "04-desperation-headline", "05-your-own-episode",
            "06-the-causal-test", "07-scaling-out"]  # fmt: skip


def test_every_documented_notebook_exists():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs_or_state(path):
    nb = json.loads(path.read_text())
    assert "widgets" not in nb.get("metadata", {}), "widget state is saved in the notebook metadata"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {i} has outputs"
            assert cell.get("execution_count") is None, f"cell {i} has an execution count"
        source = "".join(cell["source"])
        assert not re.search(r"NDIF_API_KEY\s*=|APIKEY\s*=|set_default_api_key", source), f"cell {i} sets a key"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_cell_has_a_unique_id(path):
    nb = json.loads(path.read_text())
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5), "cell ids need nbformat 4.5"
    ids = [cell.get("id") for cell in nb["cells"]]
    assert None not in ids, f"cells {[i for i, x in enumerate(ids) if x is None]} have no id"
    assert len(set(ids)) == len(ids), "two cells share an id"
