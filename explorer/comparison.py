"""Does an emotion rise across failed attempts more than in a matched control? Typed answers.

:func:`compare` runs the episode and its control once each (every emotion, the shuffled-label
null and random directions read in the same passes) and returns a :class:`Comparison`: one
:class:`LayerTest` per layer, each printing its own verdict and rendering its own table row. The
arithmetic is :mod:`explorer.stats`; docs/STATISTICS.md explains every field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats

from .episodes import Episode, load_control
from .errors import ExplorerError
from .models import Model
from .stats import (
    ThreeTests,
    attempt_means,
    exceedance_p,
    holm,
    minimum_detectable_effect,
    permutation_p,
    predicted_sign,
    slope,
)
from .tracing import IntensityTrace, readout_pass, rendered_ids
from .vectors import EmotionVectors, random_unit_directions

N_RANDOM = 64  # random directions in compare's baseline (the CLI's --random default too)
MAX_RANDOM = 4096  # more random directions than this would not fit in a laptop's memory for a long episode
# Which tokens of each attempt the test reads: the assistant's own (identical in a matched set),
# or the feedback it received (tool and user turns, which differ between episode and control).
SPANS = {"assistant": ("assistant",), "feedback": ("tool", "user")}


def span_roles(span: str) -> tuple[str, ...]:
    """The message roles whose content tokens a test on ``span`` reads: ``"assistant"`` (the
    assistant's turns, word for word the same in a matched set: what the model says after the
    feedback so far) or ``"feedback"`` (the tool and user turns, where episode and control differ:
    what the model reads). A one-line error names the choices for anything else."""
    if span not in SPANS:
        raise ExplorerError(f"span is {span!r}; use one of {', '.join(map(repr, SPANS))}")
    return SPANS[span]


def _num(value) -> float | None:
    """A JSON-safe float (NaN and None → None), rounded to 6 places."""
    if value is None:
        return None
    value = float(value)
    return None if value != value else round(value, 6)


@dataclass(frozen=True)
class AttemptMeans:
    """One attempt's mean z-scored read-out of the emotion over content tokens."""

    attempt: int
    failed: bool
    episode_assistant: float | None
    control_assistant: float | None
    episode_feedback: float | None
    control_feedback: float | None

    @property
    def difference(self) -> float | None:
        """Episode minus control on the (identical) assistant tokens."""
        if self.episode_assistant is None or self.control_assistant is None:
            return None
        return self.episode_assistant - self.control_assistant


@dataclass(frozen=True)
class Trend:
    """Spearman's rho of per-attempt means against the attempt number, and its p."""

    spearman_rho: float | None
    p: float | None


@dataclass(frozen=True)
class NullTest:
    """The emotion's difference slope against ``n`` control directions read in the same passes."""

    n: int
    abs_slope_p95: float | None
    p: float | None
    min_p: float | None
    abs_slope_mean: float | None = None
    p_holm: float | None = None


@dataclass(frozen=True)
class AfterPass:
    attempt: int
    difference_at_last_failure: float | None
    difference_after_pass: float | None
    drop: float | None


@dataclass(frozen=True)
class LayerTest(ThreeTests):
    """One emotion at one layer: the effect, its three tests, specificity and the drop after a pass.

    ``slope_z`` is the least-squares slope of (episode − control) per-attempt means in z per
    attempt; ``slope_sd`` the same in units of the read-out's SD over the control's attempt tokens
    (the unit shared with both nulls). ``mde_z`` is the minimum detectable effect: the smallest
    planted trend (z per attempt) that this test would call shown with 80% power (None until
    measured; see :func:`explorer.comparison.minimum_detectable_effect`).
    """

    emotion: str
    layer: int
    per_attempt: tuple[AttemptMeans, ...]
    episode_trend: Trend
    control_trend: Trend
    slope_z: float | None
    slope_sd: float | None
    difference_rho: float | None
    permutation_p: float | None
    permutation_min_p: float | None
    random: NullTest
    shuffled: NullTest | None
    rank: int
    of: int
    top_rises: tuple[str, ...]
    after_pass: AfterPass | None
    permutation_p_holm: float | None = None
    mde_z: float | None = None
    mde_measured: bool = False  # False: not asked for; True with mde_z None: no planted effect was found
    span: str = "assistant"  # the tokens read: see explorer.comparison.span_roles

    EFFECT = "slope_z"

    def verdict(self) -> str:
        """One line: the effect, its three p-values, its rank, and shown or not (with the MDE)."""

        def fmt(value, spec=".3f"):
            return "–" if value is None else format(value, spec)

        ps = self.p_values
        on = "" if self.span == "assistant" else f" on {self.span} tokens"
        line = (
            f"{self.emotion} @ layer {self.layer}{on}: episode − control {fmt(self.slope_z, '+.3f')} z/attempt "
            f"(permutation p {fmt(ps['permutation'])}, random p {fmt(ps['random'])}, shuffled p {fmt(ps['null'])}; "
            f"rank {self.rank}/{self.of})"
        )
        if self.shown:
            return line + ": shown"
        if self.mde_z is not None:
            mde = f"; an effect of ≥ {self.mde_z:.3f} z/attempt would have been detected"
        elif self.mde_measured:
            mde = "; no planted effect, however large, would have been detected (the nulls' smallest p is too coarse)"
        else:
            mde = ""
        return line + f": not shown{mde}"

    __str__ = verdict

    def to_dict(self) -> dict:
        """The JSON block of ``explorer compare`` (fields: docs/STATISTICS.md)."""
        random = asdict(self.random)
        shuffled = None if self.shuffled is None else asdict(self.shuffled)
        if shuffled is not None:
            shuffled.pop("abs_slope_mean")
        return {
            "layer": self.layer,
            "span": self.span,
            "per_attempt": [asdict(a) for a in self.per_attempt],
            "episode_trend": asdict(self.episode_trend),
            "control_trend": asdict(self.control_trend),
            "difference_trend": {
                "slope_z_per_attempt": self.slope_z,
                "slope_control_sd_per_attempt": self.slope_sd,
                "spearman_rho": self.difference_rho,
                "permutation_p": self.permutation_p,
                "permutation_min_p": self.permutation_min_p,
                "permutation_p_holm": self.permutation_p_holm,
                "mde_z_per_attempt": self.mde_z,
            },
            "random_directions": random,
            "shuffled_label_null": shuffled,
            "specificity": {"rank": self.rank, "of": self.of, "top_rises": list(self.top_rises)},
            "after_pass": None if self.after_pass is None else asdict(self.after_pass),
        }

    def row(self) -> dict:
        """Flat: the effect, the three tests (raw and Holm-corrected), their smallest reachable p,
        the nulls' 95th percentiles of |slope|, the rank and the drop after the pass (one row of
        the headline table)."""
        null = self.shuffled
        return {
            "emotion": self.emotion,
            "layer": self.layer,
            "slope_z": self.slope_z,
            "slope_sd": self.slope_sd,
            "permutation_p": self.permutation_p,
            "permutation_p_holm": self.permutation_p_holm,
            "random_p": self.random.p,
            "random_p_holm": self.random.p_holm,
            "null_p": None if null is None else null.p,
            "null_p_holm": None if null is None else null.p_holm,
            "rank": self.rank,
            "of": self.of,
            "drop_after_pass": None if self.after_pass is None else self.after_pass.drop,
            "random_abs_p95": self.random.abs_slope_p95,
            "null_abs_p95": None if null is None else null.abs_slope_p95,
            "permutation_min_p": self.permutation_min_p,
            "random_min_p": self.random.min_p,
            "null_min_p": None if null is None else null.min_p,
            "mde_z": self.mde_z,
        }


@dataclass(frozen=True)
class Comparison:
    """:func:`compare`'s answer for one emotion: one :class:`LayerTest` per layer scanned.

    ``print(result)`` prints the verdict at each layer; ``result.at(layer)`` is one layer's test;
    ``result.to_json()`` what ``explorer compare`` prints.
    """

    model: str
    episode: str
    control: str
    emotion: str
    failed_attempts: tuple[int, ...]
    layers: tuple[LayerTest, ...] = field(default=())
    span: str = "assistant"  # the tokens every layer's test read (explorer.comparison.span_roles)

    def at(self, layer: int | None = None) -> LayerTest:
        """The test at ``layer`` (default: the first, i.e. the only one for a single-layer call)."""
        if layer is None:
            return self.layers[0]
        for test in self.layers:
            if test.layer == layer:
                return test
        raise ExplorerError(f"layer {layer} was not compared; this result has layers {[t.layer for t in self.layers]}")

    @property
    def shown(self) -> bool:
        """True when the first (or only) layer's test is shown."""
        return self.at().shown

    def verdict(self, layer: int | None = None) -> str:
        return self.at(layer).verdict()

    def __str__(self) -> str:
        on = "" if self.span == "assistant" else f", {self.span} tokens"
        head = f"{self.episode} vs {self.control} ({self.model}{on}), failed attempts {list(self.failed_attempts)}"
        return "\n".join([head, *(t.verdict() for t in self.layers)])

    def rows(self) -> list[dict]:
        """One flat row per layer (see :meth:`LayerTest.row`), with model, episode and control."""
        ids = {"model": self.model, "episode": self.episode, "control": self.control}
        return [{**ids, **t.row()} for t in self.layers]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "episode": self.episode,
            "control": self.control,
            "emotion": self.emotion,
            "span": self.span,
            "failed_attempts": list(self.failed_attempts),
            "layers": [t.to_dict() for t in self.layers],
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def attempt_differences(
    trace: IntensityTrace, control: IntensityTrace, layer: int | None = None, span: str = "assistant"
) -> pd.DataFrame:
    """Per attempt (rows) and traced direction (columns): episode minus control, each the mean raw
    read-out over the content tokens of ``span`` (``"assistant"`` or ``"feedback"``, see
    :func:`span_roles`), in units of that direction's SD over the control's attempt tokens — the
    per-attempt differences whose slope :func:`compare` tests, for every direction a trace read
    (emotions and any added with :meth:`EmotionVectors.with_directions`)."""
    roles = list(span_roles(span))
    j = trace.layers.index(trace.default_layer if layer is None else layer)
    k = control.layers.index(trace.layers[j])
    episode_means = attempt_means(trace.tokens, trace.raw[:, :, j], roles)
    control_means = attempt_means(control.tokens, control.raw[:, :, k], roles)
    in_attempts = control.tokens["attempt"].notna().to_numpy()
    scale = control.raw[in_attempts, :, k].std(0) + 1e-12
    return pd.DataFrame(
        ((episode_means - control_means) / scale).to_numpy(), index=episode_means.index, columns=trace.emotions
    )


def paired_attempt_means(
    trace: IntensityTrace, control: IntensityTrace, emotion: str, layer: int | None = None
) -> tuple[AttemptMeans, ...]:
    """The per-attempt rows of :attr:`LayerTest.per_attempt` from two traces, without running the
    model: per attempt of either trace, ``emotion``'s mean z at ``layer`` over assistant content
    tokens (word for word the same in a matched pair) and over feedback tokens, in the episode and
    in its control; ``.difference`` is episode minus control on the assistant tokens."""
    layer = trace.default_layer if layer is None else int(layer)
    for name, t in (("trace", trace), ("control", control)):
        if layer not in t.layers:
            raise ExplorerError(f"{name} '{t.episode.id}' was not traced at layer {layer}; it has {t.layers}")
    if trace.model_name != control.model_name:
        raise ExplorerError(
            f"trace is of '{trace.model_name}' but control of '{control.model_name}'; trace both with one model"
        )
    assistant = [t.attempt_means(emotion, layer, span_roles("assistant")) for t in (trace, control)]
    feedback = [t.attempt_means(emotion, layer, span_roles("feedback")) for t in (trace, control)]
    failed = set(trace.episode.failed_attempts)
    return tuple(
        AttemptMeans(
            int(a),
            a in failed,
            _num(assistant[0].get(a, np.nan)),
            _num(assistant[1].get(a, np.nan)),
            _num(feedback[0].get(a, np.nan)),
            _num(feedback[1].get(a, np.nan)),
        )
        for a in sorted(set(assistant[0].index) | set(assistant[1].index))
    )


def compare(
    model: Model,
    episode: Episode,
    vectors: EmotionVectors,
    emotion: str,
    control: Episode | None = None,
    layers: Sequence[int] | str | int | None = None,
    n_random: int = N_RANDOM,
    mde: bool | Sequence[int] = True,
    span: str = "assistant",
) -> Comparison:
    """Does ``emotion`` rise across the failed attempts of ``episode`` more than in ``control``?
    One emotion of :func:`compare_emotions`; see there for the arguments."""
    return compare_emotions(model, episode, vectors, [emotion], control, layers, n_random, mde, span)[0]


@dataclass
class _Passes:
    """Read-outs of every direction (emotions, shuffled-label null, random) in both episodes."""

    tokens: dict
    projections: dict
    n_emotions: int
    n_null: int


def _run_passes(model, episode, control, vectors, layers, random_dirs) -> _Passes:
    null = vectors.null_directions
    n_null = 0 if null is None else null.shape[1]

    def directions(layer: int) -> torch.Tensor:
        parts = [vectors.directions[layer]] + ([null[layer]] if n_null else []) + [random_dirs]
        return torch.cat(parts)

    tokens, projections = {}, {}
    for name, ep in (("episode", episode), ("control", control)):
        rendered, ids = rendered_ids(model, ep)
        tokens[name] = rendered.tokens
        projections[name] = readout_pass(model, ids, {layer: directions(layer) for layer in layers})
    return _Passes(tokens, projections, len(vectors), n_null)


def compare_emotions(
    model: Model,
    episode: Episode,
    vectors: EmotionVectors,
    emotions: Sequence[str],
    control: Episode | None = None,
    layers: Sequence[int] | str | int | None = None,
    n_random: int = N_RANDOM,
    mde: bool | Sequence[int] = True,
    span: str = "assistant",
) -> list[Comparison]:
    """Does each of ``emotions`` rise across the failed attempts of ``episode`` more than in ``control``?

    Args:
        model, vectors: as for :func:`explorer.trace`.
        episode: the condition under test; its ``control`` is used when none is given.
        emotions: the emotions to test, each against the same two forward passes (all emotions are
            read in them anyway: the others serve for specificity).
        control: a matched episode: same roles, attempts and (ideally) assistant messages.
        layers: as :meth:`Model.resolve_layers`: None (the model's read-out layer), a layer, a
            list, or "all" (p-values then also Holm-corrected across the layers).
        n_random: random directions in the baseline (at least 1).
        mde: measure the minimum detectable effect (``LayerTest.mde_z``) at every layer (True),
            at none (False) or at the listed layers; about half a second per layer and emotion.
        span: the tokens of each attempt that are read: ``"assistant"`` (default; identical in a
            matched set, so only the context before them differs) or ``"feedback"`` (the tool and
            user turns themselves, which differ: e.g. a positive control with emotion words in
            the feedback). See :func:`span_roles`.

    Returns one :class:`Comparison` per emotion.
    """
    return compare_spans(model, episode, vectors, emotions, control, layers, n_random, mde, (span,))[span]


def compare_spans(
    model: Model,
    episode: Episode,
    vectors: EmotionVectors,
    emotions: Sequence[str],
    control: Episode | None = None,
    layers: Sequence[int] | str | int | None = None,
    n_random: int = N_RANDOM,
    mde: bool | Sequence[int] = True,
    spans: Sequence[str] = ("feedback", "assistant"),
) -> dict[str, list[Comparison]]:
    """:func:`compare_emotions` on several token spans from the same two forward passes:
    ``{span: [one Comparison per emotion]}``, e.g. what the feedback itself does to a read-out
    (``"feedback"``) beside what it leaves on the assistant's identical words after it
    (``"assistant"``). Arguments as for :func:`compare_emotions`."""
    vectors.check_model(model)
    spans = list(spans)
    if not spans:
        raise ExplorerError(f"spans is empty; give one or more of {', '.join(map(repr, SPANS))}")
    for span in spans:
        span_roles(span)  # a bad span fails before any forward pass
    targets = [vectors.index(emotion) for emotion in emotions]
    if isinstance(n_random, bool) or not isinstance(n_random, int) or not 1 <= n_random <= MAX_RANDOM:
        raise ExplorerError(f"n_random is {n_random!r}; use a whole number of directions 1 … {MAX_RANDOM}, e.g. 64")
    control = control or load_control(episode)
    if control.messages == episode.messages:  # the same transcript under another id compares nothing
        raise ExplorerError(
            f"{episode.source or episode.id}: the control has the episode's own messages; give a matched control "
            "(same assistant turns, no pressure) with --control or the episode's 'control' field"
        )
    layers = model.resolve_layers(layers)
    shared = sorted(set(episode.attempts) & set(control.attempts))
    fails = [a for a in episode.failed_attempts if a in shared]
    if len(fails) < 3:
        raise ExplorerError(
            f"{episode.source or episode.id}: needs at least 3 failed attempts that the control also has "
            f"(found {fails}); mark attempts with 'attempt' and failures with 'outcome': 'fail'"
        )
    random_dirs = random_unit_directions(n_random, model.width, seed=0).float()
    passes = _run_passes(model, episode, control, vectors, layers, random_dirs)
    results: dict[str, list[Comparison]] = {}
    for span in spans:
        results[span] = []
        for emotion, target in zip(emotions, targets):
            tests = [
                _layer_test(passes, vectors, emotion, target, j, layer, fails, shared, episode,
                            mde is True or (not isinstance(mde, bool) and layer in mde), span)
                for j, layer in enumerate(layers)
            ]  # fmt: skip
            results[span].append(
                Comparison(model.name, episode.id, control.id, emotion, tuple(fails), tuple(_with_holm(tests)), span)
            )
    return results


def _with_holm(tests: list[LayerTest]) -> list[LayerTest]:
    """The same tests with Holm-adjusted p-values across the layers."""
    perm = holm([t.permutation_p for t in tests])
    rnd = holm([t.random.p for t in tests])
    null = holm([t.shuffled.p for t in tests]) if tests[0].shuffled is not None else None
    out = []
    for i, t in enumerate(tests):
        shuffled = t.shuffled
        if shuffled is not None:
            shuffled = replace(shuffled, p_holm=_num(null[i]))
        out.append(
            replace(
                t, permutation_p_holm=_num(perm[i]), random=replace(t.random, p_holm=_num(rnd[i])), shuffled=shuffled
            )
        )
    return out


def _layer_test(passes, vectors, emotion, target, j, layer, fails, shared, episode, with_mde, span) -> LayerTest:
    n_emotions, n_null = passes.n_emotions, passes.n_null
    roles = list(span_roles(span))
    mean, std = vectors.z_offset[layer].numpy(), vectors.z_scale[layer].numpy()
    tables = {}
    for name in ("episode", "control"):
        tokens, values = passes.tokens[name], passes.projections[name][:, :, j]
        z = (values[:, :n_emotions] - mean) / std
        tables[name] = {
            "assistant": attempt_means(tokens, z, ["assistant"]),
            "feedback": attempt_means(tokens, z, ["tool", "user"]),
            "tested": attempt_means(tokens, z, roles),
            "all": attempt_means(tokens, values, roles),
        }
    x = np.asarray(fails, dtype=float)
    ctl_tokens, ctl_values = passes.tokens["control"], passes.projections["control"]
    attempt_mask = ctl_tokens["attempt"].notna().to_numpy()
    scale = ctl_values[attempt_mask, :, j].std(0) + 1e-12  # per direction, control attempt tokens
    diff = (tables["episode"]["all"].loc[fails] - tables["control"]["all"].loc[fails]).to_numpy() / scale
    slopes = slope(x, diff)
    emotion_slopes = slopes[:n_emotions]
    null_slopes = slopes[n_emotions : n_emotions + n_null]
    random_slopes = slopes[n_emotions + n_null :]
    ep_z = tables["episode"]["tested"][target]
    ctl_z = tables["control"]["tested"][target]
    rho_ep = scipy_stats.spearmanr(x, ep_z.loc[fails])
    rho_ctl = scipy_stats.spearmanr(x, ctl_z.loc[fails])
    diff_z = (ep_z.loc[fails] - ctl_z.loc[fails]).to_numpy()

    def mean_at(table, attempt):
        return _num(table[target].get(attempt, np.nan))

    per_attempt = tuple(
        AttemptMeans(
            int(a),
            a in fails,
            mean_at(tables["episode"]["assistant"], a),
            mean_at(tables["control"]["assistant"], a),
            mean_at(tables["episode"]["feedback"], a),
            mean_at(tables["control"]["feedback"], a),
        )
        for a in sorted(set(tables["episode"]["assistant"].index) | set(tables["control"]["assistant"].index))
    )
    passed = [a for a in episode.attempts if a > fails[-1] and a in shared]
    after_pass = None
    if passed:
        first = passed[0]
        d_pass = float(ep_z.get(first, np.nan) - ctl_z.get(first, np.nan))
        after_pass = AfterPass(first, _num(diff_z[-1]), _num(d_pass), _num(float(diff_z[-1]) - d_pass))
    mde_z = None
    if with_mde:
        # planted into the real per-attempt differences (control-SD units), tested as the verdict
        # tests, then put in z units: z = SD units × (control SD / neutral SD) for this emotion
        mde_sd = minimum_detectable_effect(
            x, diff[:, target], [c for c in (random_slopes, null_slopes) if len(c)], predicted_sign(emotion)
        )
        mde_z = None if mde_sd is None else _num(mde_sd * scale[target] / std[target])
    shuffled = None
    if n_null:
        shuffled = NullTest(
            n_null,
            _num(np.percentile(np.abs(null_slopes), 95)),
            _num(exceedance_p(emotion_slopes[target], null_slopes)),
            _num(1 / (1 + n_null)),
        )
    return LayerTest(
        emotion=emotion,
        layer=layer,
        per_attempt=per_attempt,
        episode_trend=Trend(_num(rho_ep[0]), _num(rho_ep[1])),
        control_trend=Trend(_num(rho_ctl[0]), _num(rho_ctl[1])),
        slope_z=_num(slope(x, diff_z[:, None])[0]),
        slope_sd=_num(emotion_slopes[target]),
        difference_rho=_num(scipy_stats.spearmanr(x, diff_z)[0]),
        permutation_p=_num(permutation_p(x, diff[:, target])),
        permutation_min_p=_num(permutation_p(x, x)),  # the smallest p any data can reach
        random=NullTest(
            len(random_slopes),
            _num(np.percentile(np.abs(random_slopes), 95)),
            _num(exceedance_p(emotion_slopes[target], random_slopes)),
            _num(1 / (1 + len(random_slopes))),
            abs_slope_mean=_num(np.abs(random_slopes).mean()),
        ),
        shuffled=shuffled,
        rank=int((emotion_slopes > emotion_slopes[target]).sum()) + 1,
        of=n_emotions,
        top_rises=tuple(vectors.emotions[i] for i in np.argsort(-emotion_slopes)[:5]),
        after_pass=after_pass,
        mde_z=mde_z,
        mde_measured=with_mde,
        span=span,
    )
