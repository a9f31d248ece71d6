"""Honest statistics, pure arithmetic: per-attempt means, trends, permutation and null p-values.

Nothing here runs a model; :mod:`explorer.comparison` runs the passes and calls these.

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
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

# The direction each emotion is predicted to move under strain (the paper: strain rises, calm
# falls). The one table every verdict and one-sided test reads; 0 (unknown) means two-sided.
PREDICTED_SIGN = {"desperate": 1, "afraid": 1, "calm": -1}
ALPHA = 0.05


def predicted_sign(emotion: str) -> int:
    """+1 (predicted to rise), -1 (to fall) or 0 (no prediction: tests are two-sided)."""
    return PREDICTED_SIGN.get(emotion, 0)


def shown(slope_value: float | None, p_values: Sequence[float | None], sign: int, alpha: float = ALPHA) -> bool:
    """The verdict rule: the effect moves in the predicted direction (any direction when ``sign``
    is 0) and every p-value is below ``alpha``."""
    moved = slope_value is not None and (slope_value * sign > 0 if sign else slope_value != 0)
    return bool(moved) and all(p is not None and p < alpha for p in p_values)


def attempt_means(tokens: pd.DataFrame, values: np.ndarray, roles: Sequence[str]) -> pd.DataFrame:
    """Mean of ``values`` (tokens, k) per attempt over content tokens of the given roles."""
    mask = (
        tokens["role"].isin(roles).to_numpy() & tokens["in_content"].to_numpy() & tokens["attempt"].notna().to_numpy()
    )
    frame = pd.DataFrame(values[mask])
    frame["attempt"] = tokens.loc[mask, "attempt"].astype(int).to_numpy()
    return frame.groupby("attempt").mean()


def group_mean_ci(groups: np.ndarray, values: np.ndarray, level: float = 0.95) -> pd.DataFrame:
    """Per group (index, sorted): ``n``, ``mean`` and the two-sided Student-t interval of the mean
    at ``level`` (``ci_low``, ``ci_high``; NaN for a group of one). NaN values are left out."""
    frame = pd.DataFrame({"group": np.asarray(groups), "value": np.asarray(values, dtype=np.float64)})
    frame = frame[np.isfinite(frame["value"])]
    table = frame.groupby("group")["value"].agg(["count", "mean", "std"])
    n = table["count"].to_numpy()
    half = np.full(len(n), np.nan)
    several = n > 1
    half[several] = (
        scipy_stats.t.ppf(0.5 + level / 2, n[several] - 1) * table["std"].to_numpy()[several] / np.sqrt(n[several])
    )
    return pd.DataFrame(
        {"n": n, "mean": table["mean"].to_numpy(), "ci_low": table["mean"] - half, "ci_high": table["mean"] + half},
        index=table.index,
    )


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


def within_group_permutation_p(x: np.ndarray, y: np.ndarray, draws: int = 10000, seed: int = 0) -> float:
    """Two-sided p of the pooled slope of ``y`` (groups, levels) on ``x`` (levels,) against the
    labels ``x`` shuffled independently within each group (row): (1 + #{|null| >= |observed|}) /
    (1 + draws). A row with a missing value keeps its values in place (it adds nothing to the null
    that the observed slope lacks)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rows = np.isfinite(y).all(1)
    y = y[rows]
    if len(y) == 0 or len(x) < 2:
        return 1.0
    xc = x - x.mean()
    denominator = len(y) * (xc**2).sum()
    observed = abs((y * xc).sum() / denominator)
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(y, (draws, *y.shape)), axis=2)
    null = np.abs((shuffled * xc).sum((1, 2)) / denominator)
    return float((1 + (null >= observed - 1e-12).sum()) / (1 + draws))


def finite(value) -> float | None:
    """``value`` as a float, or None when it is missing, NaN or infinite (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def spread(values: Sequence[float | None]) -> dict[str, float | None] | None:
    """min, 2.5th and 97.5th percentile and max of ``values`` (Nones dropped); None when empty:
    the band a set of control directions spans."""
    values = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(values):
        return None
    return {
        "min": finite(values.min()),
        "p2.5": finite(np.percentile(values, 2.5)),
        "p97.5": finite(np.percentile(values, 97.5)),
        "max": finite(values.max()),
    }


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


def exceedance_p(observed: float, null: np.ndarray) -> float:
    """Two-sided p of ``observed`` against a null sample: (1 + #{|null| >= |observed|}) / (1 + n)."""
    return float((1 + (np.abs(null) >= abs(observed)).sum()) / (1 + len(null)))


def control_p(value: float, controls: np.ndarray, sign: int) -> float | None:
    """(1 + controls at least as extreme) / (1 + n); one-sided in ``sign``'s direction, else two-sided."""
    if len(controls) == 0:
        return None
    if sign > 0:
        extreme = (controls >= value).sum()
    elif sign < 0:
        extreme = (controls <= value).sum()
    else:
        extreme = (np.abs(controls) >= abs(value)).sum()
    return float((1 + extreme) / (1 + len(controls)))


def power_to_detect(
    x: np.ndarray,
    y: np.ndarray,
    planted: float,
    controls: Sequence[np.ndarray],
    sign: int,
    simulations: int = 200,
    seed: int = 0,
    alpha: float = ALPHA,
    one_sided: bool = False,
) -> float:
    """Fraction of simulated data sets in which the test says "shown" when a trend of ``planted``
    per step (in the predicted direction) is added to the real data ``y`` (per-attempt values).

    Each simulation keeps the real data's noise — its residuals around its own trend, reshuffled
    across ``x`` — and plants the trend into it; the test is the same one the verdict uses: the
    permutation p of the slope and, for each array in ``controls`` (slopes of null directions in
    the same units), the exceedance p, all below ``alpha`` with the slope in the predicted direction.
    ``one_sided``: the controls' p counts only slopes at least as far in the predicted direction
    (:func:`control_p`, as the dose-response verdict does) instead of :func:`exceedance_p`.
    """
    rng = np.random.default_rng(seed)
    xc = x - x.mean()
    fitted = y.mean() + slope(x, y[:, None])[0] * xc
    residuals = y - fitted
    direction = sign or 1
    sims = np.stack([rng.permutation(residuals) for _ in range(simulations)]) + direction * planted * xc
    sim_slopes = slope(x, sims.T)
    if len(y) <= 8:
        orders = np.array(list(itertools.permutations(range(len(y)))))
    else:
        orders = np.stack([rng.permutation(len(y)) for _ in range(2000)])
    permuted = sims[:, orders]  # (simulations, orderings, n)
    perm_slopes = np.abs(((permuted - permuted.mean(-1, keepdims=True)) * xc).sum(-1) / (xc**2).sum())
    p_perm = (perm_slopes >= np.abs(sim_slopes)[:, None] - 1e-12).mean(1)
    ok = (sim_slopes * direction > 0) & (p_perm < alpha)
    for c in controls:
        c = np.asarray(c)
        if one_sided and sign:
            extreme = (c[None, :] * direction >= sim_slopes[:, None] * direction).sum(1)
        else:
            extreme = (np.abs(c)[None, :] >= np.abs(sim_slopes)[:, None]).sum(1)
        p_null = (1 + extreme) / (1 + len(c))
        ok &= p_null < alpha
    passed = int(ok.sum())
    return passed / simulations


def minimum_detectable_effect(
    x: np.ndarray,
    y: np.ndarray,
    controls: Sequence[np.ndarray],
    sign: int,
    power: float = 0.8,
    simulations: int = 200,
    seed: int = 0,
    alpha: float = ALPHA,
    one_sided: bool = False,
) -> float | None:
    """The smallest trend per step that :func:`power_to_detect` finds with at least ``power``
    (bisection; same units as ``y``). None when even a trend 100× the data's spread (or, when the
    controls' slopes are larger than that, 10× the largest of them) is not found, e.g. because the
    nulls' smallest reachable p is above ``alpha``."""
    spread = float(np.std(y)) or 1.0
    span = float(np.ptp(x)) or 1.0

    def found(step: float) -> bool:
        return power_to_detect(x, y, step, controls, sign, simulations, seed, alpha, one_sided) >= power

    high = 100 * spread / span
    if not found(high):
        # a nearly flat curve against large control slopes (a dose-response): search up to the controls' scale
        largest = max((float(np.abs(np.asarray(c)).max()) for c in controls if len(c)), default=0.0)
        if 10 * largest <= high or not found(10 * largest):
            return None
        high = 10 * largest
    return smallest_found(found, high)


def smallest_found(found: Callable[[float], bool], high: float, steps: int = 14) -> float:
    """Bisection between 0 and ``high`` (which ``found``) for the smallest effect ``found`` still
    accepts, to ``high / 2**steps``: the minimum detectable effect's last step."""
    low = 0.0
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (low, middle) if found(middle) else (middle, high)
    return high


class ThreeTests:
    """What a result tested by permutation, random directions and a shuffled-label null shares:
    the emotion's predicted sign, the three p-values and the verdict rule. A subclass names its
    effect attribute in ``EFFECT`` and has ``emotion``, ``permutation_p``, ``random`` and
    ``shuffled`` (each null with a ``.p``; ``shuffled`` may be None)."""

    EFFECT = "slope"

    @property
    def predicted_sign(self) -> int:
        return predicted_sign(self.emotion)

    @property
    def p_values(self) -> dict[str, float | None]:
        """The three tests' p-values: permutation, random directions, shuffled-label null."""
        return {
            "permutation": self.permutation_p,
            "random": self.random.p,
            "null": None if self.shuffled is None else self.shuffled.p,
        }

    @property
    def shown(self) -> bool:
        """Moves in the predicted direction and all three p-values are below 0.05."""
        return shown(getattr(self, self.EFFECT), list(self.p_values.values()), self.predicted_sign)
