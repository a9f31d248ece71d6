"""Honest statistics for episodes: per-attempt means, trends, matched controls and two nulls.

Raw read-outs drift with position and content, so nothing here is compared against zero. The
effect is the *episode-minus-control* trend across failed attempts, on assistant tokens that are
word for word the same in both, tested three ways:

- a permutation test: the per-attempt differences shuffled across attempts (exact when there
  are at most 8 attempts);
- random directions of the same (unit) norm read out in the same forward passes;
- the stricter null: "emotion" vectors built by the same recipe from stories whose labels were
  shuffled (shipped with the vectors), which carry whatever story content alone produces.

For the two nulls every direction's read-out is put in the same units: the standard deviation of
that direction over the control episode's attempt tokens. Specificity ranks the emotion's
rise among all emotions; scanning several layers is corrected with Holm's method.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .episodes import Episode, load_control
from .errors import ExplorerError
from .models import Model
from .tracing import readout_pass, rendered_ids
from .vectors import EmotionVectors, random_unit_directions


def attempt_means(tokens: pd.DataFrame, values: np.ndarray, roles: Sequence[str]) -> pd.DataFrame:
    """Mean of ``values`` (tokens, k) per attempt over content tokens of the given roles."""
    mask = (
        tokens["role"].isin(roles).to_numpy() & tokens["in_content"].to_numpy() & tokens["attempt"].notna().to_numpy()
    )
    frame = pd.DataFrame(values[mask])
    frame["attempt"] = tokens.loc[mask, "attempt"].astype(int).to_numpy()
    return frame.groupby("attempt").mean()


def failing_attempts(episode: Episode) -> list[int]:
    """Attempts whose outcome is fail (all attempts when the episode records no outcomes)."""
    failed = sorted({m.attempt for m in episode.messages if m.outcome == "fail" and m.attempt is not None})
    return failed or episode.attempts


def slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of each column of ``y`` (n, k) on ``x`` (n,)."""
    xc = x - x.mean()
    return (xc[:, None] * (y - y.mean(0))).sum(0) / (xc**2).sum()


def permutation_p(x: np.ndarray, y: np.ndarray, draws: int = 20000, seed: int = 0) -> float:
    """Two-sided p of the slope of ``y`` on ``x`` against ``y`` shuffled across ``x``."""
    observed = abs(slope(x, y[:, None])[0])
    if len(y) <= 8:
        perms = np.array(list(itertools.permutations(y)))
    else:
        rng = np.random.default_rng(seed)
        perms = np.array([rng.permutation(y) for _ in range(draws)])
    null = np.abs(slope(x, perms.T))
    return float((null >= observed - 1e-12).mean())


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def _exceedance_p(observed: float, null: np.ndarray) -> float:
    return float((1 + (np.abs(null) >= abs(observed)).sum()) / (1 + len(null)))


def _clean(value):
    """JSON-safe floats (NaN → None)."""
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else round(float(value), 6)
    return value


def compare(
    model: Model,
    episode: Episode,
    vectors: EmotionVectors,
    emotion: str,
    control: Episode | None = None,
    layers: Sequence[int] | str | None = None,
    n_random: int = 64,
) -> dict:
    """Does ``emotion`` rise across the failed attempts of ``episode`` more than in ``control``?
    One emotion of :func:`compare_emotions`; see there for the arguments."""
    return compare_emotions(model, episode, vectors, [emotion], control, layers, n_random)[0]


def compare_emotions(
    model: Model,
    episode: Episode,
    vectors: EmotionVectors,
    emotions: Sequence[str],
    control: Episode | None = None,
    layers: Sequence[int] | str | None = None,
    n_random: int = 64,
) -> list[dict]:
    """Does ``emotion`` rise across the failed attempts of ``episode`` more than in ``control``?

    Args:
        model, vectors: as for :func:`explorer.trace`.
        episode: the condition under test; its ``control`` is used when none is given.
        emotions: the emotions to test, each against the same two forward passes (all emotions are
            read in them anyway: the others serve for specificity).
        control: a matched episode: same roles, attempts and (ideally) assistant messages.
        layers: a layer, a list, or "all" (p-values then corrected with Holm's method);
            default: the model's read-out layer.
        n_random: random directions in the baseline.

    Returns one JSON-ready dict per emotion; see docs/STATISTICS.md for every field.
    """
    vectors.check_model(model)
    targets = [vectors.index(emotion) for emotion in emotions]
    control = control or load_control(episode)
    if layers is None:
        layers = [model.default_layer]
    elif layers == "all":
        layers = list(range(model.n_layers))
    elif isinstance(layers, int):
        layers = [layers]
    layers = sorted({model.check_layer(int(x)) for x in layers})
    fails = failing_attempts(episode)
    shared = sorted(set(episode.attempts) & set(control.attempts))
    fails = [a for a in fails if a in shared]
    if len(fails) < 3:
        raise ExplorerError(
            f"{episode.source or episode.id}: needs at least 3 failed attempts that the control also has "
            f"(found {fails}); mark attempts with 'attempt' and failures with 'outcome': 'fail'"
        )
    random_dirs = random_unit_directions(n_random, model.width, seed=0).float()
    n_emotions = len(vectors)
    null = vectors.null_directions
    n_null = 0 if null is None else null.shape[1]

    def directions(layer: int) -> torch.Tensor:
        parts = [vectors.directions[layer]] + ([null[layer]] if n_null else []) + [random_dirs]
        return torch.cat(parts)

    passes = {}
    for name, ep in (("episode", episode), ("control", control)):
        rendered, ids = rendered_ids(model, ep)
        passes[name] = (rendered.tokens, readout_pass(model, ids, {layer: directions(layer) for layer in layers}))

    x = np.asarray(fails, dtype=float)
    permutation_floor = permutation_p(x, x)  # the smallest p any data can reach: a perfect trend
    reports = []
    for emotion, target in zip(emotions, targets):
        results = []
        for j, layer in enumerate(layers):
            mean, std = vectors.neutral_mean[layer].numpy(), vectors.neutral_std[layer].numpy()
            tables = {}
            for name, (tokens, projections) in passes.items():
                values = projections[:, :, j]
                z = (values[:, :n_emotions] - mean) / std
                tables[name] = {
                    "assistant": attempt_means(tokens, z, ["assistant"]),
                    "feedback": attempt_means(tokens, z, ["tool", "user"]),
                    "all": attempt_means(tokens, values, ["assistant"]),
                }
            ctl_tokens, ctl_values = passes["control"]
            attempt_mask = ctl_tokens["attempt"].notna().to_numpy()
            scale = ctl_values[attempt_mask, :, j].std(0) + 1e-12  # per direction, control attempt tokens
            diff = (tables["episode"]["all"].loc[fails] - tables["control"]["all"].loc[fails]).to_numpy() / scale
            slopes = slope(x, diff)
            emotion_slopes = slopes[:n_emotions]
            null_slopes = slopes[n_emotions : n_emotions + n_null]
            random_slopes = slopes[n_emotions + n_null :]
            ep_z = tables["episode"]["assistant"][target]
            ctl_z = tables["control"]["assistant"][target]
            rho_ep = stats.spearmanr(x, ep_z.loc[fails]) if len(fails) > 2 else (np.nan, np.nan)
            rho_ctl = stats.spearmanr(x, ctl_z.loc[fails]) if len(fails) > 2 else (np.nan, np.nan)
            diff_z = (ep_z.loc[fails] - ctl_z.loc[fails]).to_numpy()
            per_attempt = []
            for a in sorted(set(tables["episode"]["assistant"].index) | set(tables["control"]["assistant"].index)):

                def get(table, a=a, target=target):
                    return _clean(table[target].get(a, np.nan))

                per_attempt.append(
                    {
                        "attempt": int(a),
                        "failed": a in fails,
                        "episode_assistant": get(tables["episode"]["assistant"]),
                        "control_assistant": get(tables["control"]["assistant"]),
                        "episode_feedback": get(tables["episode"]["feedback"]),
                        "control_feedback": get(tables["control"]["feedback"]),
                    }
                )
            passed = [a for a in episode.attempts if a > fails[-1] and a in shared]
            after_pass = None
            if passed:
                first = passed[0]
                d_pass = float(ep_z.get(first, np.nan) - ctl_z.get(first, np.nan))
                after_pass = {
                    "attempt": first,
                    "difference_at_last_failure": _clean(float(diff_z[-1])),
                    "difference_after_pass": _clean(d_pass),
                    "drop": _clean(float(diff_z[-1]) - d_pass),
                }
            rank = int((emotion_slopes > emotion_slopes[target]).sum()) + 1
            results.append(
                {
                    "layer": layer,
                    "per_attempt": per_attempt,
                    "episode_trend": {"spearman_rho": _clean(float(rho_ep[0])), "p": _clean(float(rho_ep[1]))},
                    "control_trend": {"spearman_rho": _clean(float(rho_ctl[0])), "p": _clean(float(rho_ctl[1]))},
                    "difference_trend": {
                        "slope_z_per_attempt": _clean(float(slope(x, diff_z[:, None])[0])),
                        "slope_control_sd_per_attempt": _clean(float(emotion_slopes[target])),
                        "spearman_rho": _clean(float(stats.spearmanr(x, diff_z)[0])),
                        "permutation_p": _clean(permutation_p(x, diff[:, target])),
                        "permutation_min_p": _clean(permutation_floor),
                    },
                    "random_directions": {
                        "n": n_random,
                        "abs_slope_mean": _clean(float(np.abs(random_slopes).mean())),
                        "abs_slope_p95": _clean(float(np.percentile(np.abs(random_slopes), 95))),
                        "p": _clean(_exceedance_p(emotion_slopes[target], random_slopes)),
                        "min_p": _clean(1 / (1 + n_random)),
                    },
                    "shuffled_label_null": None
                    if not n_null
                    else {
                        "n": n_null,
                        "abs_slope_p95": _clean(float(np.percentile(np.abs(null_slopes), 95))),
                        "p": _clean(_exceedance_p(emotion_slopes[target], null_slopes)),
                        "min_p": _clean(1 / (1 + n_null)),
                    },
                    "specificity": {
                        "rank": rank,
                        "of": n_emotions,
                        "top_rises": [vectors.emotions[i] for i in np.argsort(-emotion_slopes)[:5]],
                    },
                    "after_pass": after_pass,
                }
            )
        for key in ("permutation_p",):
            adjusted = holm([r["difference_trend"][key] for r in results])
            for r, p in zip(results, adjusted):
                r["difference_trend"][f"{key}_holm"] = _clean(p)
        for block in ("random_directions", "shuffled_label_null"):
            if results[0][block] is not None:
                adjusted = holm([r[block]["p"] for r in results])
                for r, p in zip(results, adjusted):
                    r[block]["p_holm"] = _clean(p)
        reports.append(
            {
                "model": model.name,
                "episode": episode.id,
                "control": control.id,
                "emotion": emotion,
                "failed_attempts": fails,
                "layers": results,
            }
        )
    return reports
