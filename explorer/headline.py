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
from .comparison import compare_emotions
from .episodes import load_episode
from .errors import ExplorerError
from .models import Model
from .stats import predicted_sign, shown
from .vectors import EmotionVectors

HEADLINE_DIR = Path(__file__).parent / "data" / "headline"

CONTRASTS = {
    "failure+pressure": ("impossible-code", "impossible-code-control"),
    "failure": ("impossible-code-calm-failure", "impossible-code-control"),
    "pressure": ("impossible-code", "impossible-code-calm-failure"),
}
EMOTIONS = ("desperate", "calm", "afraid")


def headline(model: Model, vectors: EmotionVectors, layers="all", emotions=EMOTIONS) -> list[dict]:
    """One row per contrast, emotion and layer with the effect and its three tests
    (:meth:`explorer.comparison.LayerTest.row`); the minimum detectable effect at the rule layer."""
    rows = []
    for contrast, (episode_id, control_id) in CONTRASTS.items():
        episode, control = load_episode(episode_id), load_episode(control_id)
        results = compare_emotions(
            model, episode, vectors, list(emotions), control=control, layers=layers, mde=[model.default_layer]
        )
        for result in results:
            rows += [{"model": model.name, "contrast": contrast, **test.row()} for test in result.layers]
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
    if path.suffix != ".json":
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


TESTS = ("permutation", "random", "null")


def shown_at_rule_layer(row: dict, alpha: float = 0.05) -> bool:
    """The pre-registered test: at the rule layer (fixed before any result was seen, so one test and
    no correction) the emotion moves in the predicted direction (``explorer.stats.PREDICTED_SIGN``)
    and all three p-values are below ``alpha`` — the rule of :attr:`LayerTest.shown`, on a row."""
    return shown(row["slope_z"], [row[f"{t}_p"] for t in TESTS], predicted_sign(row.get("emotion", "")), alpha)


def significant(row: dict, alpha: float = 0.05) -> bool:
    """The layer scan: all three p-values below ``alpha`` after Holm's correction across the layers
    scanned. Only reachable when every test's smallest possible p times the number of layers is
    below ``alpha`` (see :func:`scan_floor`)."""
    return all(row[f"{t}_p_holm"] is not None and row[f"{t}_p_holm"] < alpha for t in TESTS)


def scan_floor(rows: list[dict]) -> float:
    """The smallest Holm-corrected p that the weakest of the three tests could reach in a scan of
    these rows' layers: its smallest possible p (1 / (1 + directions) for the nulls) × layers."""
    n_layers = len({row["layer"] for row in rows})
    floors = [max((row.get(f"{t}_min_p") or 0) for row in rows) for t in TESTS]
    return min(1.0, max(floors) * n_layers)


def to_markdown(rows: list[dict], rule_layer: int) -> str:
    """Summary per contrast and emotion: the pre-registered test at the rule layer, then the layers
    passing all three tests after Holm's correction (or the floor that makes a pass unreachable)."""
    lines = [
        "| model | contrast | emotion | slope z/attempt @rule layer | perm p | random p | shuffled p | rank "
        "| drop after pass | shown at rule layer (predicted sign, all 3 p < 0.05) | detectable at rule layer "
        "| layers passing all 3 tests (Holm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keyed: dict[tuple, list[dict]] = {}
    for row in rows:
        keyed.setdefault((row["model"], row["contrast"], row["emotion"]), []).append(row)
    for (model, contrast, emotion), group in keyed.items():
        at_rule = next(r for r in group if r["layer"] == rule_layer)
        passing = [str(r["layer"]) for r in group if significant(r)]
        floor = scan_floor(group)
        scan = ", ".join(passing) or ("none" if floor < 0.05 else f"unreachable (floor {floor:.2f})")

        def fmt(value, spec=".3f"):
            return "–" if value is None else format(value, spec)

        lines.append(
            f"| {model} | {contrast} | {emotion} | {fmt(at_rule['slope_z'], '+.3f')} | "
            f"{fmt(at_rule['permutation_p'])} | {fmt(at_rule['random_p'])} | {fmt(at_rule['null_p'])} | "
            f"{at_rule['rank']}/{at_rule['of']} | {fmt(at_rule['drop_after_pass'], '+.3f')} | "
            f"{'**yes**' if shown_at_rule_layer(at_rule) else 'no'} | {_detectable(at_rule)} | {scan} |"
        )
    return "\n".join(lines)


def _detectable(row: dict) -> str:
    """The minimum detectable effect of a row, as the table prints it."""
    mde = row.get("mde_z")
    if mde is None:
        return "not measured" if "mde_z" not in row else "no effect size (nulls cannot reach p < 0.05)"
    return f"≥ {mde:.3f} z/attempt"
