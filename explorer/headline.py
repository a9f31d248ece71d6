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

import json
from pathlib import Path

import pandas as pd

from . import __version__, cache
from .episodes import load_episode
from .errors import ExplorerError
from .models import Model
from .stats import compare_emotions
from .vectors import EmotionVectors

HEADLINE_DIR = Path(__file__).parent / "data" / "headline"

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
        results = compare_emotions(model, episode, vectors, list(emotions), control=control, layers=layers)
        for emotion, result in zip(emotions, results):
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


def save(rows: list[dict], model: Model, vectors: EmotionVectors, path: str | Path) -> Path:
    """Write the rows with what produced them (model, rule layer, vectors' build) as JSON."""
    record = {
        "model": model.name,
        "rule_layer": model.default_layer,
        "explorer_version": __version__,
        "vectors_built": {k: vectors.metadata.get(k) for k in ("created", "corpus_sha256", "model_sha256")},
        "rows": rows,
    }
    path = Path(path)
    cache.write_file_atomic(path, json.dumps(record, indent=1, default=float).encode())
    return path


def shipped_headlines() -> list[str]:
    """Models whose headline statistics ship with the package (``explorer headline --out``)."""
    return sorted(p.stem for p in HEADLINE_DIR.glob("*.json"))


def load_headline(model_name_or_path: str | Path) -> tuple[pd.DataFrame, int]:
    """The headline rows of a model that cannot run here, read from the package (or a file written
    by ``explorer headline --out``): (one row per contrast, emotion and layer; the rule layer)."""
    path = Path(model_name_or_path)
    if not path.suffix == ".json":
        path = HEADLINE_DIR / f"{model_name_or_path}.json"
    if not path.is_file():
        raise ExplorerError(
            f"no headline statistics at {path}; shipped for: {', '.join(shipped_headlines()) or 'none'} "
            "(run `explorer headline --model M --out FILE` to make them)"
        )
    try:
        record = json.loads(path.read_text())
        return pd.DataFrame(record["rows"]), int(record["rule_layer"])
    except (ValueError, KeyError, TypeError) as error:
        raise ExplorerError(f"{path}: not a file written by `explorer headline --out` ({error})") from None


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
