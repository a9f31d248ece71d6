"""The headline question, asked the same way on every model: does *desperate* rise across
failed attempts, is it failure or pressure that drives it, and does it fall once the hack passes?

Three matched contrasts of the impossible-code set (identical assistant messages throughout):

- ``failure+pressure``: impossible-code vs impossible-code-control
- ``failure``:          impossible-code-calm-failure vs impossible-code-control
- ``pressure``:         impossible-code vs impossible-code-calm-failure

Each is tested for desperate, calm and afraid at every layer (Holm-corrected across layers) by
:func:`explorer.compare`. ``explorer headline --model M`` prints the table as Markdown.
"""

from __future__ import annotations

from .episodes import load_episode
from .models import Model
from .stats import compare
from .vectors import EmotionVectors

CONTRASTS = {
    "failure+pressure": ("impossible-code", "impossible-code-control"),
    "failure": ("impossible-code-calm-failure", "impossible-code-control"),
    "pressure": ("impossible-code", "impossible-code-calm-failure"),
}
EMOTIONS = ("desperate", "calm", "afraid")


def headline(model: Model, vectors: EmotionVectors, layers="all", emotions=EMOTIONS) -> list[dict]:
    """One row per contrast, emotion and layer with the effect and its three tests."""
    rows = []
    for contrast, (episode_id, control_id) in CONTRASTS.items():
        episode, control = load_episode(episode_id), load_episode(control_id)
        for emotion in emotions:
            result = compare(model, episode, vectors, emotion, control=control, layers=layers)
            for block in result["layers"]:
                trend = block["difference_trend"]
                rows.append(
                    {
                        "model": model.name,
                        "contrast": contrast,
                        "emotion": emotion,
                        "layer": block["layer"],
                        "slope_z": trend["slope_z_per_attempt"],
                        "slope_sd": trend["slope_control_sd_per_attempt"],
                        "permutation_p": trend["permutation_p"],
                        "permutation_p_holm": trend["permutation_p_holm"],
                        "random_p": block["random_directions"]["p"],
                        "random_p_holm": block["random_directions"]["p_holm"],
                        "null_p": (block["shuffled_label_null"] or {}).get("p"),
                        "null_p_holm": (block["shuffled_label_null"] or {}).get("p_holm"),
                        "rank": block["specificity"]["rank"],
                        "of": block["specificity"]["of"],
                        "drop_after_pass": (block["after_pass"] or {}).get("drop"),
                    }
                )
    return rows


def significant(row: dict, alpha: float = 0.05) -> bool:
    """An effect counts only when all three corrected tests agree."""
    keys = ("permutation_p_holm", "random_p_holm", "null_p_holm")
    return all(row[k] is not None and row[k] < alpha for k in keys)


def to_markdown(rows: list[dict], rule_layer: int) -> str:
    """Summary per contrast and emotion (rule layer, best layer, layers passing all three tests)."""
    lines = [
        "| model | contrast | emotion | slope z/attempt @rule layer | perm p | random p | shuffled p | rank "
        "| drop after pass | layers passing all 3 tests (Holm) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keyed: dict[tuple, list[dict]] = {}
    for row in rows:
        keyed.setdefault((row["model"], row["contrast"], row["emotion"]), []).append(row)
    for (model, contrast, emotion), group in keyed.items():
        at_rule = next(r for r in group if r["layer"] == rule_layer)
        passing = [str(r["layer"]) for r in group if significant(r)]

        def fmt(value, spec=".3f"):
            return "–" if value is None else format(value, spec)

        lines.append(
            f"| {model} | {contrast} | {emotion} | {fmt(at_rule['slope_z'], '+.3f')} | "
            f"{fmt(at_rule['permutation_p'])} | {fmt(at_rule['random_p'])} | {fmt(at_rule['null_p'])} | "
            f"{at_rule['rank']}/{at_rule['of']} | {fmt(at_rule['drop_after_pass'], '+.3f')} | "
            f"{', '.join(passing) or 'none'} |"
        )
    return "\n".join(lines)
