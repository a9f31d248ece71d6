"""Do the vectors read emotion in text unlike the text they were built from? Cross-validated numbers.

Every number here is out of sample: the texts a fold tests are never used to build the directions
(or fit the probe) it tests them with. Two schemes:

- **leave one register out**: build from every register but one (story, diary, a message to an AI
  assistant, …), classify the held-out register's texts — the explorer reads chat transcripts and
  code-agent feedback, not the corpus's own kind of text;
- **leave topics out**: five folds of topics (no setting is seen in training and test).

Each is scored two ways: *nearest vector* (how the explorer reads: the emotion whose direction
gives the largest read-out) under several read-outs and recipes, and a *logistic probe* (what the
layer holds at all). Beside every number: a lexical baseline (the same classifiers on the mean
input-token embedding, i.e. word identity alone) and a shuffled-label floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .models import Model
from .vectors import Extraction, denoising_basis, emotion_directions, lda_directions, shuffled_labels

# Read-outs for "which emotion is it": each scores texts (n, width) against directions (e, width).
READOUTS = ("neutral_z", "grand_mean", "cosine", "text_centred")
# Recipes: the paper's difference of means with the neutral top PCs (50% of variance) projected
# out, with none projected out ("_raw") or 80% ("_d80"), and shrinkage-whitened directions.
RECIPES = ("mean_difference", "mean_difference_raw", "mean_difference_d80", "shrinkage_lda")
DENOISE = {"mean_difference": None, "mean_difference_raw": 0.0, "mean_difference_d80": 0.8}


@dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray  # bool mask over texts
    test: np.ndarray


def folds(extraction: Extraction, registers: Sequence[str], scheme: str, n_topic_folds: int = 5) -> list[Fold]:
    """The train/test splits of ``scheme`` ("register" or "topics")."""
    registers = np.asarray(registers)
    if scheme == "register":
        return [Fold(r, registers != r, registers == r) for r in dict.fromkeys(registers.tolist())]
    topics = np.asarray([t if t is not None else -1 for t in extraction.topics])
    return [Fold(f"topics%{n_topic_folds}=={k}", topics % n_topic_folds != k, topics % n_topic_folds == k)
            for k in range(n_topic_folds)]  # fmt: skip


def _probe_accuracy(x_train, y_train, x_test, y_test, n_classes: int, l2: float = 1e-2, steps: int = 60) -> float:
    """Multinomial logistic regression (standardised features, L2), fitted with L-BFGS."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt, xs = ((x_train - mean) / std).float(), ((x_test - mean) / std).float()
    weights = torch.zeros(xt.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=steps, line_search_fn="strong_wolfe")
    target = torch.as_tensor(y_train)

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ weights + bias, target) + l2 * (weights**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return float(((xs @ weights + bias).argmax(-1).numpy() == y_test).mean())


def nearest_vector_accuracy(
    extraction: Extraction,
    fold_list: list[Fold],
    layers: Sequence[int],
    labels: Sequence[str] | None = None,
    denoise: float = 0.5,
    shrinkage: float = 0.3,
    per_fold: bool = False,
) -> pd.DataFrame:
    """Per layer, read-out and recipe: the fraction of held-out texts whose largest read-out is
    their own emotion, pooled over folds (each text is tested once) — or, with ``per_fold``, one
    row per fold with its ``tested`` count (for leave-one-register-out: the accuracy on each
    register, e.g. short texts, when it was never seen)."""
    labels = np.asarray(labels if labels is not None else extraction.labels)
    emotions = list(dict.fromkeys(labels.tolist()))
    truth = np.array([emotions.index(x) for x in labels])
    means = extraction.story_means
    correct = {}
    for layer in layers:
        covariance = extraction.neutral_covariance[layer]
        bases = {fraction: denoising_basis(covariance, fraction) for fraction in {denoise, 0.0, 0.8}}
        x = means[:, layer]
        for fold in fold_list:
            train, test = torch.from_numpy(fold.train), torch.from_numpy(fold.test)
            directions = {}
            for recipe in RECIPES:
                if recipe == "shrinkage_lda":
                    unit, _ = lda_directions(x[train][:, None], labels[fold.train], emotions, shrinkage)
                    directions[recipe] = unit[0]
                else:
                    fraction = denoise if DENOISE[recipe] is None else DENOISE[recipe]
                    unit, _ = emotion_directions(x[train][:, None], labels[fold.train], emotions, [bases[fraction]])
                    directions[recipe] = unit[0]
            class_means = torch.stack([x[train][torch.from_numpy(labels[fold.train] == e)].mean(0) for e in emotions])
            grand = class_means.mean(0)
            held = x[test]
            centred = held - grand
            for recipe, d in directions.items():
                neutral_mean = d @ extraction.neutral_mean[layer]
                neutral_std = torch.einsum("ew,wv,ev->e", d, covariance, d).clamp_min(1e-12).sqrt()
                scores = {
                    "neutral_z": (held @ d.T - neutral_mean) / neutral_std,
                    "grand_mean": centred @ d.T,
                    "cosine": (centred / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12)) @ d.T,
                    "text_centred": (held - held.mean(0)) @ d.T,
                }
                for readout, s in scores.items():
                    key = (layer, readout, recipe, fold.name)
                    correct[key] = int((s.argmax(-1).numpy() == truth[fold.test]).sum())
    tested = {f.name: int(f.test.sum()) for f in fold_list}
    frame = pd.DataFrame(
        [{"layer": k[0], "readout": k[1], "recipe": k[2], "fold": k[3], "correct": v, "tested": tested[k[3]]}
         for k, v in correct.items()]
    )  # fmt: skip
    if per_fold:
        return frame.assign(accuracy=frame.correct / frame.tested).drop(columns="correct")
    return pooled_accuracy(frame.assign(accuracy=frame.correct / frame.tested))


def pooled_accuracy(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Per-fold rows (``accuracy``, ``tested``) pooled over folds: every text counts once."""
    frame = per_fold.assign(correct=per_fold.accuracy * per_fold.tested)
    keys = [c for c in frame.columns if c not in ("fold", "correct", "tested", "accuracy")]
    pooled = frame.groupby(keys, as_index=False, sort=False)[["correct", "tested"]].sum()
    return pooled.assign(accuracy=pooled.correct / pooled.tested).drop(columns=["correct", "tested"])


def probe_accuracy(
    features: torch.Tensor, labels: Sequence[str], fold_list: list[Fold], layers: Sequence[int] | None = None
) -> dict[int, float]:
    """Per layer of ``features`` (texts, layers, width): held-out accuracy of a logistic probe."""
    labels = np.asarray(labels)
    emotions = list(dict.fromkeys(labels.tolist()))
    y = np.array([emotions.index(x) for x in labels])
    layers = range(features.shape[1]) if layers is None else layers
    out = {}
    for layer in layers:
        hits = 0
        for fold in fold_list:
            x = features[:, layer]
            hits += _probe_accuracy(x[fold.train], y[fold.train], x[fold.test], y[fold.test], len(emotions)) * int(
                fold.test.sum()
            )
        out[int(layer)] = hits / sum(int(f.test.sum()) for f in fold_list)
    return out


def lexical_means(model: Model, texts: Sequence[str], offset: int) -> torch.Tensor:
    """Mean input-token embedding over each text's read-out window: (texts, 1, width) — what word
    identity alone carries, the baseline every layer must beat."""
    from .activations import tokenize, window_start

    table = model.hf.get_input_embeddings().weight.detach().to(torch.float64)
    out = torch.empty(len(texts), 1, table.shape[1], dtype=torch.float64)
    for i, text in enumerate(texts):
        ids = tokenize(model, text)[0]
        out[i, 0] = table[ids[window_start(len(ids), offset) :]].mean(0)
    return out


def lexical_extraction(extraction: Extraction, lexical: torch.Tensor) -> Extraction:
    """An extraction whose one "layer" is the lexical features (no neutral denoising)."""
    width = lexical.shape[-1]
    return Extraction(
        lexical,
        extraction.labels,
        extraction.topics,
        torch.zeros(1, width, dtype=torch.float64),
        torch.eye(width, dtype=torch.float64)[None],
        torch.ones(1, dtype=torch.float64),
        extraction.neutral_tokens,
    )


def generalisation_report(
    model: Model,
    extraction: Extraction,
    registers: Sequence[str],
    texts: Sequence[str],
    offset: int,
    probe_layers: Sequence[int] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every generalisation number: nearest-vector accuracy per layer × read-out × recipe × scheme,
    probe accuracy per layer × scheme, each with its lexical baseline and shuffled-label floor;
    ``by_register``: leave-one-register-out nearest-vector accuracy on each held-out register."""
    layers = list(range(extraction.story_means.shape[1]))
    probe_layers = layers if probe_layers is None else list(probe_layers)
    shuffled = shuffled_labels(extraction.labels, seed=0)
    lexical = lexical_extraction(extraction, lexical_means(model, texts, offset))
    nearest, probes, by_register = [], [], None
    for scheme in ("register", "topics"):
        fold_list = folds(extraction, registers, scheme)
        for labels, kind in ((None, "real"), (shuffled, "shuffled")):
            folds_frame = nearest_vector_accuracy(extraction, fold_list, layers, labels, per_fold=True)
            if scheme == "register" and kind == "real":
                by_register = folds_frame.rename(columns={"fold": "register"})
            nearest.append(pooled_accuracy(folds_frame).assign(scheme=scheme, labels=kind, features="residual"))
            lex = nearest_vector_accuracy(lexical, fold_list, [0], labels, denoise=0.0)
            nearest.append(lex.assign(scheme=scheme, labels=kind, features="lexical", layer=-1))
            lab = labels if labels is not None else extraction.labels
            if kind == "real" or scheme == "register":
                probe = probe_accuracy(extraction.story_means, lab, fold_list, probe_layers)
                probes += [
                    {"scheme": scheme, "labels": kind, "features": "residual", "layer": k, "accuracy": v}
                    for k, v in probe.items()
                ]
                lex_probe = probe_accuracy(lexical.story_means, lab, fold_list, [0])
                probes.append(
                    {"scheme": scheme, "labels": kind, "features": "lexical", "layer": -1, "accuracy": lex_probe[0]}
                )
    return {"nearest": pd.concat(nearest, ignore_index=True), "probe": pd.DataFrame(probes), "by_register": by_register}
