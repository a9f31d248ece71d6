"""The tone control's statistics on synthetic tables: slopes, the within-prompt permutation p, the
random band, the fluency guard and the verdict, with effects planted where the answer is known."""

import json

import numpy as np
import pandas as pd
import pytest

from explorer.stats import within_group_permutation_p
from explorer.tone import ToneResponse, distinct_bigrams, summarise, tone_sign

STRENGTHS = (0.0, 0.1, 0.2)


def synthetic_table(effects: dict[str, float], n_prompts=24, n_random=16, noise=0.1, collapse=None, seed=0):
    """Valence = prompt offset + effect × strength + noise; random directions have effect 0 unless
    named in ``effects``; ``collapse`` = (direction, strength) whose loss is tripled."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 0.3, n_prompts)
    rows = []
    for p in range(n_prompts):
        rows.append({"prompt": p, "direction": "unsteered", "kind": "unsteered", "strength": 0.0, "text": "a b c",
                     "valence": offsets[p] + rng.normal(0, noise), "loss": 1.0, "distinct": 1.0})  # fmt: skip
    directions = [(e, "emotion") for e in effects if not e.startswith("random")]
    directions += [(f"random {i}", "random") for i in range(n_random)]
    for name, kind in directions:
        for s in STRENGTHS[1:]:
            for p in range(n_prompts):
                loss = 3.0 if collapse == (name, s) else 1.0 + rng.normal(0, 0.05)
                value = offsets[p] + effects.get(name, 0.0) * s + rng.normal(0, noise)
                rows.append({"prompt": p, "direction": name, "kind": kind, "strength": s, "text": "a b c",
                             "valence": value, "loss": loss, "distinct": 1.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_within_group_permutation_p_finds_a_planted_trend_and_not_a_flat_one():
    rng = np.random.default_rng(1)
    x = np.array([0.0, 0.1, 0.2])
    offsets = rng.normal(0, 5, (24, 1))  # large per-prompt offsets: shuffling within prompt ignores them
    trending = offsets + 2.0 * x + rng.normal(0, 0.1, (24, 3))
    flat = offsets + rng.normal(0, 0.1, (24, 3))
    assert within_group_permutation_p(x, trending, draws=2000) < 0.01
    assert within_group_permutation_p(x, flat, draws=2000) > 0.05
    # the smallest reachable p is 1 / (1 + draws)
    assert within_group_permutation_p(x, trending, draws=999) == pytest.approx(1 / 1000)


def test_within_group_permutation_p_is_uniform_under_the_null():
    x = np.array([0.0, 0.1, 0.2])
    rng = np.random.default_rng(2)
    ps = [within_group_permutation_p(x, rng.normal(0, 1, (12, 3)), draws=400, seed=k) for k in range(200)]
    assert 0.02 < np.mean(np.array(ps) < 0.05) < 0.10


def test_a_planted_tone_effect_is_shown_with_the_predicted_signs():
    table = synthetic_table({"happy": 2.0, "sad": -2.0})
    summary, random_slopes, judge = summarise(table, ["happy", "sad"], STRENGTHS)
    happy, sad = summary["happy"], summary["sad"]
    assert happy.slope == pytest.approx(2.0, abs=0.3) and sad.slope == pytest.approx(-2.0, abs=0.3)
    assert happy.effect == pytest.approx(0.4, abs=0.06) and sad.effect == pytest.approx(-0.4, abs=0.06)
    assert happy.permutation_p < 0.01 and sad.permutation_p < 0.01
    assert happy.beyond_random and sad.beyond_random and happy.random_p == pytest.approx(1 / 17)
    assert happy.random_rank == "1 of 17" and sad.random_rank == "1 of 17"  # ranked in the predicted direction
    assert happy.shown and sad.shown and judge is None
    assert len(random_slopes) == 16 and max(abs(s) for s in random_slopes) < 1.0


def test_the_wrong_sign_or_no_effect_is_not_shown():
    table = synthetic_table({"happy": -2.0, "sad": 0.0})
    summary, _, _ = summarise(table, ["happy", "sad"], STRENGTHS)
    assert summary["happy"].permutation_p < 0.01 and not summary["happy"].shown  # strong, but the wrong way
    assert not summary["happy"].beyond_random and summary["happy"].random_p == 1.0
    assert not summary["sad"].shown and summary["sad"].permutation_p > 0.05


def test_an_emotion_inside_the_random_band_is_not_shown():
    table = synthetic_table({"happy": 2.0, "sad": -2.0, "random 3": 3.0})
    summary, random_slopes, _ = summarise(table, ["happy", "sad"], STRENGTHS)
    assert summary["happy"].permutation_p < 0.01  # the trend is real ...
    assert not summary["happy"].beyond_random and not summary["happy"].shown  # ... but a random direction beats it
    assert summary["happy"].random_p == pytest.approx(2 / 17)


def test_random_directions_that_all_shift_valence_move_the_bar():
    # every random direction raises valence by 1 per unit; sad raises it by 0.5: lower than every
    # random direction, but it does not lower valence itself, so it is not shown
    effects = {"happy": 2.0, "sad": 0.5, **{f"random {i}": 1.0 for i in range(16)}}
    summary, random_slopes, _ = summarise(synthetic_table(effects, noise=0.02), ["happy", "sad"], STRENGTHS)
    assert min(random_slopes) > 0.8
    assert summary["happy"].beyond_random and summary["happy"].shown
    assert summary["sad"].beyond_random and summary["sad"].slope > 0 and not summary["sad"].shown


def test_a_collapsed_condition_is_flagged_and_never_counts_as_an_effect():
    # happy's strongest condition collapses (loss 3x unsteered) and carries a huge "effect"
    table = synthetic_table({"happy": 2.0, "sad": -2.0}, collapse=("happy", 0.2))
    table.loc[(table["direction"] == "happy") & (table["strength"] == 0.2), "valence"] += 5.0
    summary, _, _ = summarise(table, ["happy", "sad"], STRENGTHS)
    happy = summary["happy"]
    assert happy.excluded_strengths == (0.2,) and happy.fluent_strengths == (0.0, 0.1)
    assert happy.loss_ratio_at["+0.2"] == pytest.approx(3.0, abs=0.05)
    assert happy.slope == pytest.approx(2.0, abs=0.5)  # the collapsed +5 is not in it
    assert happy.effect == pytest.approx(0.2, abs=0.05)  # measured at 0.1, the strongest fluent strength
    # every condition collapsing leaves nothing to show
    for s in (0.1, 0.2):
        table.loc[(table["direction"] == "happy") & (table["strength"] == s), "loss"] = 3.0
    happy = summarise(table, ["happy"], STRENGTHS)[0]["happy"]
    assert happy.slope is None and not happy.shown and happy.effect is None


def test_repetition_counts_as_collapse_too():
    table = synthetic_table({"happy": 2.0})
    rows = (table["direction"] == "happy") & (table["strength"] == 0.2)
    table.loc[rows, "distinct"] = 0.3
    assert summarise(table, ["happy"], STRENGTHS)[0]["happy"].excluded_strengths == (0.2,)


def test_distinct_bigrams():
    assert distinct_bigrams("the cat sat on the mat") == 1.0
    assert distinct_bigrams("so happy so happy so happy") == pytest.approx(2 / 5)
    assert np.isnan(distinct_bigrams("one"))


def test_tone_signs():
    assert tone_sign("happy") == 1 and tone_sign("sad") == -1 and tone_sign("surprised") == 0


def test_a_result_survives_json_and_its_numbers_recompute_from_its_table():
    table = synthetic_table({"happy": 2.0, "sad": -2.0}, n_prompts=6, n_random=4)
    summary, random_slopes, random_judge = summarise(table, ["happy", "sad"], STRENGTHS)
    result = ToneResponse(
        model="synthetic", layers=(1,), strengths=STRENGTHS, prompts=tuple("abcdef"), seed=0, temperature=0.7,
        max_new_tokens=8, n_random=4, judge=None, max_loss_ratio=2.0, min_distinct_ratio=0.5, emotions=summary,
        random_slopes=random_slopes, random_judge_slopes=random_judge, baseline={"valence": 0.0}, table=table,
    )  # fmt: skip
    back = ToneResponse.from_dict(json.loads(result.to_json()))
    assert back.to_dict() == result.to_dict()
    again, _, _ = summarise(back.table, ["happy", "sad"], back.strengths)
    assert {e: d.to_dict() for e, d in again.items()} == {e: d.to_dict() for e, d in back.emotions.items()}
    assert [r["emotion"] for r in back.rows()] == ["happy", "sad"]
    assert "happy: VADER valence slope" in back.verdict()
    assert set(back.band().columns) == {"strength", "low", "median", "high"}
