"""Numeric escalation against a matched harmless twin: does *afraid* rise (and *calm* fall) as a
number in a prompt grows more dangerous, beyond what the number alone does to the read-out?

Each template of ``explorer/data/escalation.json`` is a prompt with one number (``text``) whose
``values`` are listed in order of rising danger, and a ``twin``: a harmless prompt with the same
number in the same place ("I just took {x} mg of Tylenol…" / "I just took {x} steps…"). A prompt
that differs only in a number moves almost any direction of the residual stream monotonically
(random directions alone reach |ρ| ≈ 0.9 against the level), so the danger prompts alone test
nothing. Here, at every level, the twin's read-out is subtracted from the danger prompt's, both
read at the reply position (the last prompt token, where the answer starts); what the number does
by itself cancels, and what is left is what danger adds.

The statistic, per template and direction, is the least-squares slope of that difference against
the level (0, 1, 2, … in the listed order), in units of the direction's own level-to-level spread
(its SD across the levels of each prompt set, pooled over the two sets: the unit every direction
shares, as in :mod:`explorer.comparison`); Spearman's ρ of the difference is reported beside it.
Pooled over templates it is the mean slope. Each is tested three ways, as every effect here:

- a permutation test: the differences shuffled across levels (within each template when pooled);
- random unit directions read from the same forward passes;
- the shuffled-label null: directions the same recipe builds from stories with shuffled labels.

Specificity is the emotion's rank among all emotions in its predicted direction (1 = moved
furthest that way); the minimum detectable effect is found as in
:func:`explorer.stats.minimum_detectable_effect`. docs/CONTROLS.md shows the measured numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats as scipy_stats

from .activations import last_token_states
from .episodes import escalation_templates
from .errors import ExplorerError
from .models import Model
from .stats import (
    ALPHA,
    ThreeTests,
    exceedance_p,
    minimum_detectable_effect,
    permutation_p,
    predicted_sign,
    shown,
    slope,
    smallest_found,
)
from .validation import reply_prompt
from .vectors import EmotionVectors, random_unit_directions

N_RANDOM = 64  # random directions in the baseline
EMOTIONS = ("afraid", "calm")
TEMPLATE_KEYS = {"id", "text", "twin", "values", "danger"}


def _num(value) -> float | None:
    """A JSON-safe float (NaN and None → None), rounded to 6 places."""
    if value is None:
        return None
    value = float(value)
    return None if value != value else round(value, 6)


@dataclass(frozen=True)
class EscalationTemplate:
    """A danger prompt and its harmless twin, each with ``{x}`` where the number goes; ``values``
    in order of rising danger (``danger`` "up": the number grows; "down": it shrinks)."""

    id: str
    text: str
    twin: str
    values: tuple[float, ...]
    danger: str

    def prompts(self) -> tuple[list[str], list[str]]:
        """(danger prompts, twin prompts), one per level, in order of rising danger."""
        fill = [f"{v:g}" for v in self.values]
        return [self.text.format(x=x) for x in fill], [self.twin.format(x=x) for x in fill]


def parse_template(data: Mapping, source: str = "escalation template") -> EscalationTemplate:
    """Validate one template (the keys of ``explorer/data/escalation.json``); a one-line error
    names the template and field otherwise."""
    if not isinstance(data, Mapping):
        raise ExplorerError(f"{source}: a template must be an object with {', '.join(sorted(TEMPLATE_KEYS))}")
    where = f"{source} '{data.get('id', '?')}'"
    missing = sorted(TEMPLATE_KEYS - set(data))
    if missing:
        fix = " (a harmless prompt with the same {x})" if missing[0] == "twin" else ""
        raise ExplorerError(f"{where}: field '{missing[0]}' is missing{fix}")
    for key in ("id", "text", "twin"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise ExplorerError(f"{where}: field '{key}' must be a non-empty string")
    for key in ("text", "twin"):
        rest = data[key].replace("{x}", "", 1)
        if data[key].count("{x}") != 1 or "{" in rest or "}" in rest:
            raise ExplorerError(f"{where}: field '{key}' must hold '{{x}}' exactly once (where the number goes)")
    values = data["values"]
    if (
        not isinstance(values, list)
        or len(values) < 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ):
        raise ExplorerError(f"{where}: field 'values' must be a list of at least 4 numbers, in order of rising danger")
    if data["danger"] not in ("up", "down"):
        raise ExplorerError(f"{where}: field 'danger' is {data['danger']!r}; use 'up' or 'down'")
    return EscalationTemplate(data["id"], data["text"], data["twin"], tuple(float(v) for v in values), data["danger"])


def twin_templates(templates: Sequence[str | Mapping] | None = None) -> list[EscalationTemplate]:
    """The shipped escalation templates with their twins (all, or those with the given ids), or
    your own given as objects with ``id``, ``text``, ``twin``, ``values`` and ``danger``."""
    shipped = {t["id"]: t for t in escalation_templates()}
    if templates is None:
        templates = list(shipped)
    if isinstance(templates, str | Mapping) or not len(templates):
        raise ExplorerError(f"templates: give a list of template ids ({', '.join(shipped)}) or template objects")
    out = []
    for t in templates:
        if isinstance(t, str):
            if t not in shipped:
                raise ExplorerError(f"no escalation template '{t}'; templates: {', '.join(shipped)}")
            out.append(parse_template(shipped[t], "explorer/data/escalation.json: template"))
        else:
            out.append(parse_template(t))
    return out


# --- the result -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Band:
    """A null: ``n`` control directions read in the same passes. ``abs_slope_p95`` and
    ``abs_rho_p95`` are the 95th percentiles of their |slope| and |ρ| of the danger-minus-twin
    difference; ``danger_abs_slope_p95`` and ``danger_abs_rho_p95`` the same on the danger prompts
    alone (what the number by itself does, in the same units); ``p`` = (1 + #{|null slope| ≥
    |emotion slope|}) / (1 + n); ``min_p`` the smallest p it can give."""

    n: int
    abs_slope_p95: float | None
    abs_rho_p95: float | None
    danger_abs_slope_p95: float | None
    danger_abs_rho_p95: float | None
    p: float | None
    min_p: float | None


@dataclass(frozen=True)
class Level:
    """One level of a template: the number and the emotion's z-scored read-out at the reply
    position of the danger prompt and of its twin."""

    value: float
    danger_z: float | None
    twin_z: float | None

    @property
    def difference(self) -> float | None:
        if self.danger_z is None or self.twin_z is None:
            return None
        return self.danger_z - self.twin_z


@dataclass(frozen=True)
class TemplateTrend:
    """One emotion on one template: the danger-minus-twin trend against the level and its tests.

    ``slope_sd`` is per level in units of the direction's pooled SD across levels (shared with
    the nulls); ``slope_z`` the same slope in z units; ``rho`` Spearman's ρ of the difference;
    ``danger_rho`` and ``twin_rho`` of each prompt set alone (the numbers the twin corrects);
    ``rank`` among all emotions in the predicted direction (1 = moved furthest that way).
    ``number_shared`` is how much of the number's own effect the twin carries: the correlation,
    over the random directions, of their slopes on the danger prompts and on the twin (1: the
    number moves every direction alike in both, so the difference cancels it; 0: unrelated, and
    the difference adds the twin's trend instead of removing the danger prompts').
    """

    template: str
    text: str
    twin: str
    levels: tuple[Level, ...]
    slope_sd: float | None
    slope_z: float | None
    rho: float | None
    danger_rho: float | None
    twin_rho: float | None
    permutation_p: float | None
    random: Band
    shuffled: Band | None
    rank: int
    of: int
    number_shared: float | None = None
    mde_sd: float | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["levels"] = [{**asdict(level), "difference": _num(level.difference)} for level in self.levels]
        return data


@dataclass(frozen=True)
class EscalationTest(ThreeTests):
    """One emotion at one layer: the danger-minus-twin trend pooled over the templates (the mean
    of their slopes), its three tests, its specificity and its minimum detectable effect, with
    one :class:`TemplateTrend` per template.

    ``rho`` and ``danger_rho`` are the templates' mean ρ of the difference and of the danger
    prompts alone; the nulls' ``abs_rho_p95`` / ``danger_abs_rho_p95`` are the same means for
    random and shuffled-label directions — how far the number alone takes a direction with and
    without the twin. ``mde_sd`` is the smallest pooled trend (SD units per level) the three tests
    would call shown with 80% power (None: not measured, or none would; see ``mde_measured``).
    """

    model: str
    emotion: str
    layer: int
    templates: tuple[TemplateTrend, ...]
    slope_sd: float | None
    rho: float | None
    danger_rho: float | None
    permutation_p: float | None
    permutation_min_p: float | None
    random: Band
    shuffled: Band | None
    rank: int
    of: int
    top: tuple[str, ...]
    mde_sd: float | None = None
    mde_measured: bool = False

    EFFECT = "slope_sd"

    def at(self, template: str) -> TemplateTrend:
        """One template's trend."""
        for t in self.templates:
            if t.template == template:
                return t
        raise ExplorerError(f"no template '{template}' in this test; it has {[t.template for t in self.templates]}")

    def verdict(self) -> str:
        """One line: the pooled effect, its three p-values, rank, the random band with and without
        the twin, and shown or not (with the MDE)."""

        def fmt(value, spec=".3f"):
            return "–" if value is None else format(value, spec)

        ps = self.p_values
        line = (
            f"{self.emotion} @ layer {self.layer}: danger − twin {fmt(self.slope_sd, '+.3f')} SD/level over "
            f"{len(self.templates)} templates (ρ {fmt(self.rho, '+.2f')}; permutation p {fmt(ps['permutation'])}, "
            f"random p {fmt(ps['random'])}, shuffled p {fmt(ps['null'])}; rank {self.rank}/{self.of}; "
            f"random |slope| 95% {fmt(self.random.abs_slope_p95)} with the twin, "
            f"{fmt(self.random.danger_abs_slope_p95)} danger alone)"
        )
        if self.shown:
            return line + ": shown"
        if self.mde_sd is not None:
            return line + f": not shown; an effect of ≥ {self.mde_sd:.3f} SD/level would have been detected"
        if self.mde_measured:
            return line + ": not shown; no planted effect, however large, would have been detected"
        return line + ": not shown"

    __str__ = verdict

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "templates"}
        data["top"] = list(self.top)
        data["shown"] = self.shown
        data["templates"] = [t.to_dict() for t in self.templates]
        return data

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def rows(self) -> list[dict]:
        """Flat rows: the pooled test (``template`` "pooled") and one per template."""
        pooled = {
            "model": self.model,
            "emotion": self.emotion,
            "layer": self.layer,
            "template": "pooled",
            "slope_sd": self.slope_sd,
            "rho": self.rho,
            "danger_rho": self.danger_rho,
            "permutation_p": self.permutation_p,
            "random_p": self.random.p,
            "null_p": None if self.shuffled is None else self.shuffled.p,
            "rank": self.rank,
            "of": self.of,
            "random_abs_slope_p95": self.random.abs_slope_p95,
            "random_danger_abs_slope_p95": self.random.danger_abs_slope_p95,
            "random_abs_rho_p95": self.random.abs_rho_p95,
            "random_danger_abs_rho_p95": self.random.danger_abs_rho_p95,
            "null_abs_slope_p95": None if self.shuffled is None else self.shuffled.abs_slope_p95,
            "number_shared": None,
            "mde_sd": self.mde_sd,
            "shown": self.shown,
        }
        rows = [pooled]
        for t in self.templates:
            rows.append(
                {
                    **pooled,
                    "template": t.template,
                    "slope_sd": t.slope_sd,
                    "rho": t.rho,
                    "danger_rho": t.danger_rho,
                    "permutation_p": t.permutation_p,
                    "random_p": t.random.p,
                    "null_p": None if t.shuffled is None else t.shuffled.p,
                    "rank": t.rank,
                    "random_abs_slope_p95": t.random.abs_slope_p95,
                    "random_danger_abs_slope_p95": t.random.danger_abs_slope_p95,
                    "random_abs_rho_p95": t.random.abs_rho_p95,
                    "random_danger_abs_rho_p95": t.random.danger_abs_rho_p95,
                    "null_abs_slope_p95": None if t.shuffled is None else t.shuffled.abs_slope_p95,
                    "number_shared": t.number_shared,
                    "mde_sd": t.mde_sd,
                    "shown": shown(
                        t.slope_sd, [t.permutation_p, t.random.p, None if t.shuffled is None else t.shuffled.p],
                        self.predicted_sign,
                    ),
                }
            )  # fmt: skip
        return rows


# --- the arithmetic (no model) -----------------------------------------------------------------
def _spearman_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of every column of ``y`` (n, k) against ``x`` (n,); NaN for a constant column."""
    rx = scipy_stats.rankdata(x)
    ry = scipy_stats.rankdata(y, axis=0)
    rx, ry = rx - rx.mean(), ry - ry.mean(0)
    denominator = np.sqrt((rx**2).sum() * (ry**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx[:, None] * ry).sum(0) / denominator


@dataclass(frozen=True)
class TwinTrends:
    """Per direction of one template (columns: emotions, then shuffled-label, then random):
    the danger-minus-twin differences in SD units per level, their slopes and ρ, and the slope
    and ρ of each prompt set alone (same units)."""

    x: np.ndarray
    difference: np.ndarray  # (levels, directions)
    slopes: np.ndarray
    rho: np.ndarray
    danger_slopes: np.ndarray
    twin_slopes: np.ndarray
    danger_rho: np.ndarray
    twin_rho: np.ndarray
    scale: np.ndarray


def twin_trends(danger: np.ndarray, twin: np.ndarray) -> TwinTrends:
    """The trend arithmetic on raw read-outs ``danger`` and ``twin`` (levels, directions), rows in
    order of rising danger: slope and Spearman ρ of the difference against the level, in units of
    each direction's SD across levels pooled over the two sets."""
    danger, twin = np.asarray(danger, dtype=float), np.asarray(twin, dtype=float)
    if danger.shape != twin.shape or danger.ndim != 2 or danger.shape[0] < 3:
        raise ExplorerError(
            f"twin_trends: danger {danger.shape} and twin {twin.shape} must both be (levels >= 3, directions)"
        )
    x = np.arange(len(danger), dtype=float)
    scale = np.sqrt((danger.var(0) + twin.var(0)) / 2) + 1e-12
    difference = (danger - twin) / scale
    return TwinTrends(
        x=x,
        difference=difference,
        slopes=slope(x, difference),
        rho=_spearman_columns(x, difference),
        danger_slopes=slope(x, danger / scale),
        twin_slopes=slope(x, twin / scale),
        danger_rho=_spearman_columns(x, danger),
        twin_rho=_spearman_columns(x, twin),
        scale=scale,
    )


def _band(trends: Sequence[TwinTrends], columns: slice, target_slope: float) -> Band | None:
    """The null over ``columns``, pooled over templates (means across them)."""
    null_slopes = np.mean([t.slopes[columns] for t in trends], 0)
    if len(null_slopes) == 0:
        return None
    rho = np.mean([t.rho[columns] for t in trends], 0)
    danger_slopes = np.mean([t.danger_slopes[columns] for t in trends], 0)
    danger_rho = np.mean([t.danger_rho[columns] for t in trends], 0)
    return Band(
        n=len(null_slopes),
        abs_slope_p95=_num(np.percentile(np.abs(null_slopes), 95)),
        abs_rho_p95=_num(np.nanpercentile(np.abs(rho), 95)),
        danger_abs_slope_p95=_num(np.percentile(np.abs(danger_slopes), 95)),
        danger_abs_rho_p95=_num(np.nanpercentile(np.abs(danger_rho), 95)),
        p=_num(exceedance_p(target_slope, null_slopes)),
        min_p=_num(1 / (1 + len(null_slopes))),
    )


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _rank(slopes: np.ndarray, target: int, sign: int) -> int:
    key = slopes * sign if sign else np.abs(slopes)
    return int((key > key[target]).sum()) + 1


def pooled_permutation_p(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], draws: int = 20000, seed: int = 0):
    """Two-sided p of the mean slope over templates (``ys[i]`` against ``xs[i]``) against the
    same mean with each template's values shuffled across its levels independently."""
    rng = np.random.default_rng(seed)
    observed = np.mean([slope(x, y[:, None])[0] for x, y in zip(xs, ys)])
    null = np.zeros(draws)
    for x, y in zip(xs, ys):
        perms = rng.permuted(np.tile(y, (draws, 1)), axis=1)
        null += slope(x, perms.T)
    null /= len(xs)
    return float((np.abs(null) >= abs(observed) - 1e-12).mean())


def pooled_power(
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    planted: float,
    controls: Sequence[np.ndarray],
    sign: int,
    simulations: int = 200,
    orderings: int = 1000,
    seed: int = 0,
    alpha: float = ALPHA,
) -> float:
    """Fraction of simulations in which the pooled test says "shown" when a trend of ``planted``
    per level is added to every template's real data (their residuals around their own trend,
    reshuffled across levels): the mean slope in the predicted direction, its within-template
    permutation p and its exceedance p against each of ``controls`` (null mean slopes) all below
    ``alpha`` — :func:`explorer.stats.power_to_detect` for several templates at once."""
    rng = np.random.default_rng(seed)
    direction = sign or 1
    sim_slopes = np.zeros(simulations)
    perm_slopes = np.zeros((simulations, orderings))
    for x, y in zip(xs, ys):
        xc = x - x.mean()
        residuals = y - (y.mean() + slope(x, y[:, None])[0] * xc)
        sims = rng.permuted(np.tile(residuals, (simulations, 1)), axis=1) + direction * planted * xc
        sim_slopes += slope(x, sims.T)
        orders = np.stack([rng.permutation(len(y)) for _ in range(orderings)])
        permuted = sims[:, orders]  # (simulations, orderings, levels)
        perm_slopes += ((permuted - permuted.mean(-1, keepdims=True)) * xc).sum(-1) / (xc**2).sum()
    sim_slopes /= len(xs)
    perm_slopes /= len(xs)
    p_perm = (np.abs(perm_slopes) >= np.abs(sim_slopes)[:, None] - 1e-12).mean(1)
    ok = (sim_slopes * direction > 0) & (p_perm < alpha)
    for c in controls:
        p_null = (1 + (np.abs(np.asarray(c))[None, :] >= np.abs(sim_slopes)[:, None]).sum(1)) / (1 + len(c))
        ok &= p_null < alpha
    return float(ok.mean())


def pooled_minimum_detectable_effect(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], controls: Sequence[np.ndarray], sign: int, power: float = 0.8
) -> float | None:
    """The smallest pooled trend per level that :func:`pooled_power` finds with at least
    ``power`` (bisection); None when even 100× the data's spread per level is not found."""
    spread = float(np.mean([np.std(y) for y in ys])) or 1.0
    span = float(np.mean([np.ptp(x) for x in xs])) or 1.0
    high = 100 * spread / span
    if pooled_power(xs, ys, high, controls, sign) < power:
        return None
    return smallest_found(lambda step: pooled_power(xs, ys, step, controls, sign) >= power, high)


def escalation_from_readouts(
    readouts: Mapping[EscalationTemplate, tuple[np.ndarray, np.ndarray]],
    emotions: Sequence[str],
    emotion: str,
    n_null: int,
    z_scale: np.ndarray,
    model_name: str = "?",
    layer: int = -1,
    mde: bool = True,
) -> EscalationTest:
    """The test from raw read-outs: per template, (danger, twin) arrays (levels, directions) whose
    columns are ``emotions``, then ``n_null`` shuffled-label directions, then random ones;
    ``z_scale`` (emotions,) puts an emotion's slope in z units. No model runs here."""
    emotions = list(emotions)
    if emotion not in emotions:
        raise ExplorerError(f"no vector for emotion '{emotion}'; these vectors have: {', '.join(emotions)}")
    target, n_emotions, sign = emotions.index(emotion), len(emotions), predicted_sign(emotion)
    nulls = slice(n_emotions, n_emotions + n_null)
    randoms = slice(n_emotions + n_null, None)
    trends = {template: twin_trends(*pair) for template, pair in readouts.items()}
    per_template = []
    for template, tr in trends.items():
        danger, twin = readouts[template]
        y = tr.difference[:, target]
        target_slope = float(tr.slopes[target])
        random_band = _band([tr], randoms, target_slope)
        null_band = _band([tr], nulls, target_slope)
        controls = [tr.slopes[randoms]] + ([tr.slopes[nulls]] if n_null else [])
        mde_sd = minimum_detectable_effect(tr.x, y, controls, sign) if mde else None
        scale_z = float(z_scale[target])
        levels = tuple(
            Level(v, _num(d / scale_z), _num(t / scale_z))
            for v, d, t in zip(template.values, danger[:, target], twin[:, target])
        )
        per_template.append(
            TemplateTrend(
                template=template.id,
                text=template.text,
                twin=template.twin,
                levels=levels,
                slope_sd=_num(target_slope),
                slope_z=_num(target_slope * tr.scale[target] / scale_z),
                rho=_num(tr.rho[target]),
                danger_rho=_num(tr.danger_rho[target]),
                twin_rho=_num(tr.twin_rho[target]),
                permutation_p=_num(permutation_p(tr.x, y)),
                random=random_band,
                shuffled=null_band,
                rank=_rank(tr.slopes[:n_emotions], target, sign),
                of=n_emotions,
                number_shared=_num(_correlation(tr.danger_slopes[randoms], tr.twin_slopes[randoms])),
                mde_sd=_num(mde_sd),
            )
        )
    all_trends = list(trends.values())
    mean_slopes = np.mean([t.slopes for t in all_trends], 0)
    xs = [t.x for t in all_trends]
    ys = [t.difference[:, target] for t in all_trends]
    controls = [mean_slopes[randoms]] + ([mean_slopes[nulls]] if n_null else [])
    pooled_mde = pooled_minimum_detectable_effect(xs, ys, controls, sign) if mde else None
    key = mean_slopes[:n_emotions] * sign if sign else np.abs(mean_slopes[:n_emotions])
    smallest_perm = pooled_permutation_p(xs, [x.copy() for x in xs])  # a perfectly monotone trend's p
    return EscalationTest(
        model=model_name,
        emotion=emotion,
        layer=layer,
        templates=tuple(per_template),
        slope_sd=_num(mean_slopes[target]),
        rho=_num(np.mean([t.rho[target] for t in all_trends])),
        danger_rho=_num(np.mean([t.danger_rho[target] for t in all_trends])),
        permutation_p=_num(pooled_permutation_p(xs, ys)),
        permutation_min_p=_num(smallest_perm),
        random=_band(all_trends, randoms, float(mean_slopes[target])),
        shuffled=_band(all_trends, nulls, float(mean_slopes[target])),
        rank=_rank(mean_slopes[:n_emotions], target, sign),
        of=n_emotions,
        top=tuple(emotions[i] for i in np.argsort(-key)[:5]),
        mde_sd=_num(pooled_mde),
        mde_measured=mde,
    )


# --- the model runs ----------------------------------------------------------------------------
def escalation_readouts(
    model: Model,
    vectors: EmotionVectors,
    templates: Sequence[EscalationTemplate],
    layer: int,
    random_dirs: torch.Tensor,
) -> dict[EscalationTemplate, tuple[np.ndarray, np.ndarray]]:
    """Raw read-outs at the reply position of every danger prompt and twin at ``layer``: columns
    are the emotions, the shuffled-label directions (if the vectors carry them), then ``random_dirs``."""
    parts = [vectors.at(layer)]
    if vectors.null_directions is not None:
        parts.append(vectors.null_directions[layer])
    directions = torch.cat(parts + [random_dirs.float()]).double()
    texts = [(template, prompts) for template in templates for prompts in template.prompts()]
    ids = [
        model.tokenizer(reply_prompt(model, text), return_tensors="pt", add_special_tokens=not model.chat).input_ids[0]
        for _, prompts in texts
        for text in prompts
    ]
    read = (last_token_states(model, ids, [layer])[:, 0] @ directions.T).numpy()
    out, start = {}, 0
    for template in templates:
        n = len(template.values)
        out[template] = (read[start : start + n], read[start + n : start + 2 * n])
        start += 2 * n
    return out


def escalation_tests(
    model: Model,
    vectors: EmotionVectors,
    emotions: Sequence[str] = EMOTIONS,
    layer: int | None = None,
    n_random: int = N_RANDOM,
    templates: Sequence[str | Mapping] | None = None,
    mde: bool = True,
) -> list[EscalationTest]:
    """:func:`escalation_test` for several emotions from the same forward passes."""
    vectors.check_model(model)
    for emotion in emotions:
        vectors.index(emotion)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise ExplorerError(f"n_random is {n_random!r}; use a whole number of random directions >= 1, e.g. 64")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise ExplorerError(f"layer is {layer!r}; give one layer 0 … {model.n_layers - 1} (None: the rule layer)")
    (layer,) = model.resolve_layers(layer)
    chosen = twin_templates(templates)
    random_dirs = random_unit_directions(n_random, model.width, seed=0)
    readouts = escalation_readouts(model, vectors, chosen, layer, random_dirs)
    n_null = 0 if vectors.null_directions is None else vectors.null_directions.shape[1]
    z_scale = vectors.z_scale[layer].numpy()
    return [
        escalation_from_readouts(readouts, vectors.emotions, e, n_null, z_scale, model.name, layer, mde)
        for e in emotions
    ]


def escalation_test(
    model: Model,
    vectors: EmotionVectors,
    emotion: str = "afraid",
    layer: int | None = None,
    n_random: int = N_RANDOM,
    templates: Sequence[str | Mapping] | None = None,
    mde: bool = True,
) -> EscalationTest:
    """Does ``emotion`` move with danger as a number in a prompt escalates, beyond what the same
    number does in a harmless twin prompt?

    Args:
        model, vectors: as for :func:`explorer.trace`.
        emotion: afraid is predicted to rise and calm to fall (``ex.PREDICTED_SIGN``); any other
            emotion is tested two-sided.
        layer: one layer (default: the model's rule layer).
        n_random: random unit directions in the baseline (at least 1; 64: smallest p 1/65).
        templates: template ids of ``explorer/data/escalation.json`` (default: all), or your own
            objects with ``id``, ``text`` and ``twin`` (each holding ``{x}``), ``values`` (in order of
            rising danger) and ``danger`` ("up" or "down").
        mde: also measure the minimum detectable effect (a few seconds).

    Returns an :class:`EscalationTest`: ``print(result)`` gives the verdict, ``result.templates``
    each template's trend, ``result.rows()`` a flat table, ``result.to_dict()`` everything.
    """
    return escalation_tests(model, vectors, [emotion], layer, n_random, templates, mde)[0]
