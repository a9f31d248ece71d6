"""The shipped tone result (explorer/data/controls/tone-MODEL.json) opens without a model, was made
by the command line's defaults (so `explorer tone --out FILE` regenerates it), holds every
continuation, and its statistics recompute exactly from its own table."""

import numpy as np
import pytest

import explorer as ex
from explorer import tone


@pytest.fixture(scope="module")
def shipped():
    return ex.load_tone_response(ex.DEFAULT_MODEL)


def test_the_shipped_result_was_made_with_the_default_configuration(shipped):
    assert shipped.model == ex.DEFAULT_MODEL
    assert tuple(shipped.emotions) == tone.EMOTIONS
    assert shipped.strengths == tone.STRENGTHS and shipped.layers == tone.LAYERS
    assert shipped.n_random == tone.N_RANDOM >= 16 and shipped.seed == 0
    assert shipped.temperature == tone.TEMPERATURE and shipped.max_new_tokens == tone.MAX_NEW_TOKENS
    assert list(shipped.prompts) == tone.load_prompts() and len(shipped.prompts) >= 24
    assert (shipped.max_loss_ratio, shipped.min_distinct_ratio) == (tone.MAX_LOSS_RATIO, tone.MIN_DISTINCT_RATIO)


def test_every_prompt_has_every_condition(shipped):
    table = shipped.table
    per_prompt = 1 + (len(shipped.emotions) + shipped.n_random) * (len(shipped.strengths) - 1)
    assert len(table) == len(shipped.prompts) * per_prompt
    assert (table.groupby("prompt").size() == per_prompt).all()
    assert set(table["kind"]) == {"unsteered", "emotion", "random"}
    assert table["valence"].between(-1, 1).all() and (table["tokens"] <= shipped.max_new_tokens).all()


def test_the_statistics_recompute_from_the_table(shipped):
    summary, random_slopes, random_judge = tone.summarise(
        shipped.table, list(shipped.emotions), shipped.strengths, shipped.max_loss_ratio, shipped.min_distinct_ratio,
        seed=shipped.seed,
    )  # fmt: skip
    assert {e: d.to_dict() for e, d in summary.items()} == {e: d.to_dict() for e, d in shipped.emotions.items()}
    assert np.allclose(random_slopes, shipped.random_slopes)
    unsteered = shipped.table[shipped.table["kind"] == "unsteered"]
    assert shipped.baseline["valence"] == pytest.approx(unsteered["valence"].mean())
    assert len(shipped.rows()) == len(shipped.emotions) and shipped.verdict().count("\n") == len(shipped.emotions)
