"""Forced-choice decisions under steering: the unsafe option's log-odds, and its dose-response.

An episode's ``decision`` (:class:`explorer.episodes.Decision`) is asked after the episode with the
options in both orders; the log-odds of the unsafe letter, averaged over the two orders, is read
under each steering condition. :func:`dose_response` sweeps strength for emotions against random
and shuffled-label directions and returns a typed :class:`DoseResponse`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats

from .episodes import Decision, Episode, Message, refuse_control_tokens, render_text
from .errors import ExplorerError
from .hooks import Steering, apply_in_trace
from .models import Model
from .remote import pass_failures
from .stats import control_p, minimum_detectable_effect, permutation_p, predicted_sign, shown, slope, spread
from .steering import DEFAULT_STRENGTHS, check_strength
from .vectors import EmotionVectors, random_unit_directions


def _prompt(model: Model, messages: list[Message]) -> tuple[str, int]:
    """The text up to the assistant's answer and the character where the last (question) turn starts."""
    context = render_text(model, messages[:-1])
    text = render_text(model, messages, reply=True)
    if not text.startswith(context):
        raise ExplorerError(f"the chat template of '{model.name}' renders earlier turns differently after a new turn")
    return text, len(context)


def _letter_ids(model: Model) -> dict[str, list[int]]:
    """Token ids that begin an answer 'A' or 'B' (with and without a leading space)."""
    ids = {}
    for letter in "AB":
        variants = {model.tokenizer.encode(v, add_special_tokens=False)[0] for v in (letter, f" {letter}")}
        ids[letter] = sorted(variants)
    if set(ids["A"]) & set(ids["B"]):
        raise ExplorerError(f"the tokenizer of '{model.name}' does not separate 'A' and 'B'")
    return ids


def _tokenized_orders(model: Model, episode: Episode, decision: Decision) -> dict[bool, tuple[list[int], int]]:
    """For each option order (unsafe first or not): the prompt's token ids and how many of them
    belong to the episode before the question turn."""
    where = episode.source or episode.id
    for i, m in enumerate(episode.messages):
        refuse_control_tokens(model, m.content, f"{where}: message {i}")
    for key in ("question", "safe", "unsafe"):
        refuse_control_tokens(model, getattr(decision, key), f"{where}: field 'decision.{key}'")
    orders = {}
    for unsafe_first in (False, True):
        text, boundary = _prompt(model, decision.messages(episode, unsafe_first))
        enc = model.tokenize(text, templated=model.chat, offsets=True)
        split = sum(1 for _, end in enc["offset_mapping"] if 0 < end <= boundary) or 1
        orders[unsafe_first] = (enc["input_ids"], min(split, len(enc["input_ids"]) - 1))
    return orders


class DecisionRunner(Protocol):
    """Reads the unsafe option's log-odds at a decision under a steering condition."""

    def log_odds(self, deltas: dict[int, torch.Tensor] | None) -> float:
        """Mean over both option orders of log P(unsafe letter) - log P(safe letter), with
        ``deltas[layer]`` (1, width) added on the decision turn (None: unsteered)."""
        ...


def decision_runner(model: Model, episode: Episode, decision: Decision) -> DecisionRunner:
    """The runner for ``model``: the key/value-cache one locally, the traced one on NDIF."""
    return (TracedDecisionRunner if model.remote else CachedDecisionRunner)(model, episode, decision)


class CachedDecisionRunner:
    """Log-odds of the unsafe option for many steering conditions, the context run once.

    The episode (up to the decision) is run once, unsteered, and its key/value cache kept; each
    condition then runs only the decision turn, steered at every token of it. Both option orders
    are asked and their log-odds averaged, which cancels any preference for a letter.
    """

    def __init__(self, model: Model, episode: Episode, decision: Decision):
        self.model = model
        self.letters = _letter_ids(model)
        tokenized = _tokenized_orders(model, episode, decision)
        prefixes = [ids[:split] for ids, split in tokenized.values()]
        self.orders = {unsafe_first: ids[split:] for unsafe_first, (ids, split) in tokenized.items()}
        common = 0
        for a, b in zip(*prefixes):
            if a != b:
                break
            common += 1
        # both orders share the context; anything after it is steered and re-run per condition
        self.prefix = prefixes[0][:common]
        for unsafe_first, tail in list(self.orders.items()):
            self.orders[unsafe_first] = prefixes[int(unsafe_first)][common:] + tail
        total = len(self.prefix) + max(len(t) for t in self.orders.values())
        if total > model.context_limit:
            where = episode.source or episode.id
            raise ExplorerError(
                f"{where}: the decision prompt is {total} tokens; '{model.name}' reads {model.context_limit}"
            )
        with torch.inference_mode():  # only the key/value cache is kept: no logits over the context
            out = model.hf(input_ids=torch.tensor([self.prefix]), use_cache=True, logits_to_keep=1)
        self.cache = getattr(out, "cache", None) or out.past_key_values
        self.n_prefix = len(self.prefix)

    def log_odds(self, deltas: dict[int, torch.Tensor] | None) -> float:
        values = []
        for unsafe_first, tail in self.orders.items():
            steering = Steering("decision", deltas or {}, None)
            # a copy: running the tail extends the cache (and sliding-window layers forget)
            cache = copy.deepcopy(self.cache)
            with self.model.steered(steering), torch.inference_mode():
                logits = self.model.hf(
                    input_ids=torch.tensor([tail]),
                    cache=cache,
                    use_cache=True,
                    cache_position=torch.arange(self.n_prefix, self.n_prefix + len(tail)),
                    logits_to_keep=1,  # the answer's next-token logits only
                ).logits[0, -1]
            logp = torch.log_softmax(logits.float(), -1)
            score = {k: float(torch.logsumexp(logp[v], 0)) for k, v in self.letters.items()}
            unsafe, safe = ("A", "B") if unsafe_first else ("B", "A")
            values.append(score[unsafe] - score[safe])
        return float(np.mean(values))


class TracedDecisionRunner:
    """The same log-odds with no key/value cache: each condition is one nnsight trace per option
    order, steered inside the trace on the decision turn's tokens, returning two log-probabilities.
    Used for remote (NDIF) models, where nothing but those numbers travels back."""

    def __init__(self, model: Model, episode: Episode, decision: Decision):
        self.model = model
        self.letters = _letter_ids(model)
        self.orders = _tokenized_orders(model, episode, decision)
        self.n_prefix = min(split for _, split in self.orders.values())

    def log_odds(self, deltas: dict[int, torch.Tensor] | None) -> float:
        values = []
        for unsafe_first, (ids, _) in self.orders.items():
            n = len(ids)
            steering = Steering("decision", deltas or {}, slice(self.n_prefix, None), in_trace=True)
            score = {}  # filled inside the trace: only names that exist before it come back out
            with pass_failures(self.model), self.model.steered(steering), torch.inference_mode():
                with self.model.trace(torch.tensor([ids])):
                    for layer in sorted(steering.deltas):
                        apply_in_trace(self.model.layers[layer], self.model.steering.added(layer, n, in_trace=True))
                    logp = self.model.nn.output.logits[0, -1].float().log_softmax(-1)
                    for letter, token_ids in self.letters.items():
                        score[letter] = torch.logsumexp(logp[token_ids], 0).save()
            unsafe, safe = ("A", "B") if unsafe_first else ("B", "A")
            values.append(float(score[unsafe]) - float(score[safe]))
        return float(np.mean(values))


N_RANDOM = 32  # random directions in the dose-response control (the CLI's --random default too)
CLI_STRENGTHS = (-0.1, -0.05, 0.0, 0.05, 0.1)  # the command line's quicker default sweep


@dataclass(frozen=True)
class EmotionDose:
    """One emotion's dose-response: the slope of log-odds on strength and its tests.

    ``random_p`` / ``null_p`` are one-sided in the predicted direction (two-sided for emotions with
    no prediction) against the random and shuffled-label directions' slopes; ``trend_p`` the
    slope's permutation p over every ordering of the strengths.
    """

    emotion: str
    slope: float
    predicted_sign: int
    trend_rho: float | None
    trend_p: float
    random_p: float | None
    random_rank: str
    null_p: float | None
    log_odds_at: dict[str, float]
    # the smallest slope (predicted direction) this test would call shown with 80% power; None
    # with ``mde_measured`` when no slope could be (too few control directions for p < 0.05)
    mde_slope: float | None = None
    mde_measured: bool = False

    @property
    def shown(self) -> bool:
        """Moves in the predicted direction with trend, random and null p all below 0.05."""
        ps = [self.trend_p, self.random_p] + ([self.null_p] if self.null_p is not None else [])
        return shown(self.slope, ps, self.predicted_sign)

    def verdict(self) -> str:
        def fmt(value):
            return "–" if value is None else f"{value:.3f}"

        line = (
            f"{self.emotion}: slope {self.slope:+.2f} log-odds per unit strength (trend p {fmt(self.trend_p)}, "
            f"random p {fmt(self.random_p)}, shuffled p {fmt(self.null_p)}): {'shown' if self.shown else 'not shown'}"
        )
        if self.shown or not self.mde_measured:
            return line
        if self.mde_slope is None:
            return line + "; no slope, however large, could be shown with these few control directions"
        return line + f"; a slope of ≥ {self.mde_slope:.2f} would have been detected (80% power)"

    __str__ = verdict

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass(frozen=True)
class DoseResponse:
    """:func:`dose_response`'s answer: per emotion an :class:`EmotionDose`, and ``table`` (one row
    per direction and strength: direction, kind, strength, log_odds) for plots."""

    model: str
    episode: str
    decision: Decision
    layers: tuple[int, ...]
    strengths: tuple[float, ...]
    baseline_log_odds: float
    random_directions: int
    shuffled_directions: int
    emotions: dict[str, EmotionDose]
    table: pd.DataFrame
    # the slopes of the control directions, by kind ("random", "shuffled"), as the tests used them
    control_slopes: dict[str, tuple[float, ...]]

    def __getitem__(self, emotion: str) -> EmotionDose:
        if emotion not in self.emotions:
            raise ExplorerError(f"'{emotion}' was not swept; this result has {', '.join(self.emotions)}")
        return self.emotions[emotion]

    def band(self, low: float = 2.5, high: float = 97.5, kind: str = "random") -> pd.DataFrame:
        """Per strength, the random directions' log-odds percentiles (for a plot's grey band);
        ``kind="shuffled"``: the shuffled-label directions'."""
        if kind not in ("random", "shuffled"):
            raise ExplorerError(f"band: kind is {kind!r}; use 'random' or 'shuffled'")
        randoms = self.table[self.table["kind"] == kind]
        if randoms.empty:
            fix = "random=16 or more" if kind == "random" else "null=True and vectors with shuffled-label directions"
            raise ExplorerError(f"dose_response ran without {kind} directions; run it with {fix}")
        grouped = randoms.groupby("strength")["log_odds"]
        return pd.DataFrame(
            {"low": grouped.quantile(low / 100), "median": grouped.median(), "high": grouped.quantile(high / 100)}
        ).reset_index()

    def random_slopes(self) -> dict[str, float | None] | None:
        """min, 2.5th and 97.5th percentile and max of the random directions' slopes."""
        return spread(self.control_slopes["random"])

    def __str__(self) -> str:
        head = f"dose-response on {self.episode} ({self.model}, layers {list(self.layers)}):"
        return "\n".join([head, *(e.verdict() for e in self.emotions.values())])

    def to_dict(self, table: bool = True) -> dict:
        """Plain JSON values (the CLI's output); ``table`` includes every (direction, strength)."""
        out = {
            "model": self.model,
            "episode": self.episode,
            "decision": self.decision.to_dict(),
            "layers": list(self.layers),
            "strengths": list(self.strengths),
            "baseline_log_odds": self.baseline_log_odds,
            "random_directions": self.random_directions,
            "shuffled_directions": self.shuffled_directions,
            "random_slopes": self.random_slopes(),
            "emotions": {e: d.to_dict() for e, d in self.emotions.items()},
            "random_band": self.band().to_dict(orient="records") if self.random_directions else None,
        }
        if table:
            out["table"] = self.table.to_dict(orient="records")
            out["control_slopes"] = {kind: list(values) for kind, values in self.control_slopes.items()}
        return out

    def to_json(self, table: bool = True, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(table), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> DoseResponse:
        """The result back from :meth:`to_dict` (with its table), e.g. a file written by
        :func:`save_dose_response`."""
        table = pd.DataFrame(data["table"], columns=["direction", "kind", "strength", "log_odds"])
        return cls(
            model=data["model"],
            episode=data["episode"],
            decision=Decision(**data["decision"]),
            layers=tuple(data["layers"]),
            strengths=tuple(float(s) for s in data["strengths"]),
            baseline_log_odds=float(data["baseline_log_odds"]),
            random_directions=int(data["random_directions"]),
            shuffled_directions=int(data["shuffled_directions"]),
            emotions={e: EmotionDose(**d) for e, d in data["emotions"].items()},
            table=table,
            control_slopes={k: tuple(float(v) for v in values) for k, values in data["control_slopes"].items()},
        )


def control_directions(
    model: Model, vectors: EmotionVectors, random: int, null: bool, seed: int = 0
) -> list[tuple[str, str, torch.Tensor]]:
    """The control directions of :func:`dose_response`, as (name, kind, (layers, width)): ``random``
    random unit directions (from ``seed``), then (``null``) the vectors' shuffled-label directions."""
    controls = []
    for i, direction in enumerate(random_unit_directions(random, model.width, seed=seed + 1000)):
        controls.append((f"random {i}", "random", direction.expand(model.n_layers, -1)))
    if null and vectors.null_directions is not None:
        for i in range(vectors.null_directions.shape[1]):
            controls.append((f"shuffled {i}", "shuffled", vectors.null_directions[:, i]))
    return controls


def condition_deltas(
    directions: torch.Tensor, strength: float, norm: torch.Tensor, layers: Sequence[int]
) -> dict[int, torch.Tensor]:
    """What one condition adds at each steered layer: ``strength`` × the layer's residual norm ×
    the direction, normalised per layer."""
    unit = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return {layer: (strength * norm[layer] * unit[layer])[None, :] for layer in layers}


def dose_response(
    model: Model,
    episode: Episode,
    vectors: EmotionVectors,
    emotions: Sequence[str] = ("desperate", "calm"),
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    layers: int | Sequence[int] | str | None = None,
    random: int = N_RANDOM,
    null: bool = True,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    mde: bool = True,
) -> DoseResponse:
    """Sweep steering strength and read the unsafe option's log-odds at the episode's decision.

    Every emotion is tested against ``random`` random unit directions and (``null``) the
    shuffled-label "emotions" built with the vectors, steered the same way. For each direction
    the slope of log-odds on strength is fitted; an emotion's p-values are the fraction of
    control slopes at least as extreme in the predicted direction (``explorer.stats.PREDICTED_SIGN``;
    two-sided for other emotions); the within-curve trend is Spearman's rho with the slope's
    permutation p (exact over every ordering of the strengths up to eight of them).
    ``layers`` as :meth:`Model.resolve_layers` (default: the read-out layer). ``mde``: also find
    each emotion's minimum detectable slope (:attr:`EmotionDose.mde_slope`): the real curve's
    residuals, reshuffled, with a slope planted, tested exactly as the verdict tests.
    """
    vectors.check_model(model)
    emotions = list(emotions)
    if not emotions:
        raise ExplorerError("dose_response: no emotion given; name at least one, e.g. emotions=['desperate']")
    for emotion in emotions:
        vectors.index(emotion)
    strengths = np.array(sorted({check_strength(s) for s in strengths}), dtype=np.float64)
    if len(strengths) < 3:
        raise ExplorerError("dose_response: give at least three strengths, e.g. -0.1,0,0.1")
    if isinstance(random, bool) or not isinstance(random, int) or random < 0:
        raise ExplorerError(f"dose_response: random is {random!r}; use a whole number of directions >= 0, e.g. 32")
    layers = model.resolve_layers(layers)
    decision = episode.require_decision()
    runner = decision_runner(model, episode, decision)
    norm = vectors.residual_norm

    controls = control_directions(model, vectors, random, null, seed)
    directions = [(e, "emotion", vectors[e].directions) for e in emotions] + controls

    baseline = runner.log_odds(None)
    rows, total, done = [], len(directions) * (len(strengths) - 1), 0
    for name, kind, dirs in directions:
        for s in strengths:
            if s == 0:
                value = baseline
            else:
                value = runner.log_odds(condition_deltas(dirs, float(s), norm, layers))
                done += 1
                if progress:
                    progress(done, total)
            rows.append({"direction": name, "kind": kind, "strength": float(s), "log_odds": value})
    table = pd.DataFrame(rows)

    slopes = {
        name: float(slope(strengths, group.sort_values("strength")["log_odds"].to_numpy()[:, None])[0])
        for name, group in table.groupby("direction", sort=False)
    }
    random_slopes = np.array([slopes[n] for n, k, _ in controls if k == "random"])
    null_slopes = np.array([slopes[n] for n, k, _ in controls if k == "shuffled"])
    summary = {}
    for e in emotions:
        curve = table[table["direction"] == e].sort_values("strength")["log_odds"].to_numpy()
        rho = scipy_stats.spearmanr(strengths, curve)[0]
        sign = predicted_sign(e)
        mde_slope = None
        if mde:
            controls = [c for c in (random_slopes, null_slopes) if len(c)]
            mde_slope = minimum_detectable_effect(strengths, curve, controls, sign, one_sided=True)
        summary[e] = EmotionDose(
            emotion=e,
            slope=slopes[e],
            predicted_sign=sign,
            trend_rho=None if np.isnan(rho) else float(rho),
            trend_p=float(permutation_p(strengths, curve)),  # exact over all orderings up to 8 strengths
            random_p=control_p(slopes[e], random_slopes, sign),
            random_rank=f"{int((random_slopes > slopes[e]).sum()) + 1} of {len(random_slopes) + 1}",
            null_p=control_p(slopes[e], null_slopes, sign),
            log_odds_at={f"{s:+g}": float(v) for s, v in zip(strengths, curve)},
            mde_slope=mde_slope,
            mde_measured=mde,
        )
    return DoseResponse(
        model=model.name,
        episode=episode.id,
        decision=decision,
        layers=tuple(layers),
        strengths=tuple(strengths.tolist()),
        baseline_log_odds=baseline,
        random_directions=int(len(random_slopes)),
        shuffled_directions=int(len(null_slopes)),
        emotions=summary,
        table=table,
        control_slopes={"random": tuple(random_slopes.tolist()), "shuffled": tuple(null_slopes.tolist())},
    )


# --- dose-responses shipped with the package -----------------------------------------------
DOSE_RESPONSE_DIR = Path(__file__).parent / "data" / "dose_response"
FORMAT = "explorer-dose-response/1"


def _vectors_build(vectors: EmotionVectors) -> dict:
    return {k: vectors.metadata.get(k) for k in ("created", "corpus_sha256", "model_sha256")}


def _episode_sha256(episode: Episode) -> str:
    return hashlib.sha256(episode.canonical_json().encode()).hexdigest()


def shipped_path(model_name: str, episode_id: str) -> Path:
    """Where ``explorer steer EPISODE --model M --out ...`` keeps the package's copy."""
    return DOSE_RESPONSE_DIR / model_name.replace("/", "--") / f"{episode_id}.json"


def shipped_dose_responses() -> list[tuple[str, str]]:
    """(model, episode) pairs whose full dose-response ships with the package."""
    return sorted((p.parent.name, p.stem) for p in DOSE_RESPONSE_DIR.glob("*/*.json"))


def save_dose_response(
    result: DoseResponse, episode: Episode, vectors: EmotionVectors, path: str | Path, seed: int = 0
) -> Path:
    """Write ``result`` with its whole table and what produced it (the episode's digest, the
    vectors' build, the random directions' seed), so :func:`load_dose_response` can refuse a file
    that no longer matches and a test can recompute any of its rows."""
    from . import __version__, cache

    record = {
        "format": FORMAT,
        "explorer_version": __version__,
        "episode_sha256": _episode_sha256(episode),
        "vectors_built": _vectors_build(vectors),
        "seed": seed,
        "result": result.to_dict(table=True),
    }
    path = Path(path)
    cache.write_file_atomic(path, json.dumps(record, indent=1).encode())
    return path


def load_dose_response(
    model: Model | str, episode: Episode | str, vectors: EmotionVectors | None = None, path: str | Path | None = None
) -> DoseResponse:
    """A full :class:`DoseResponse` computed ahead (``explorer steer EPISODE --out FILE``), read
    from ``path`` or the package: every random and shuffled-label direction at every strength,
    too slow to sweep in a notebook on a laptop CPU.

    Refuses, with a one-line reason, a file made for another model, for another version of the
    episode, or (when ``vectors`` are given) with other vectors than these.
    """
    from .episodes import load_episode

    name = model if isinstance(model, str) else model.name
    episode = load_episode(episode) if isinstance(episode, str) else episode
    path = Path(path) if path is not None else shipped_path(name, episode.id)
    remake = f"make it with `explorer steer {episode.id} --model {name} --random {N_RANDOM} --out FILE`"
    if not path.is_file():
        shipped = ", ".join(f"{m}/{e}" for m, e in shipped_dose_responses()) or "none"
        raise ExplorerError(f"no dose-response at {path} (shipped: {shipped}); {remake}")
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"field 'format' is {record.get('format')!r}, expected {FORMAT!r}")
        result = DoseResponse.from_dict(record["result"])
    except (ValueError, KeyError, TypeError) as error:
        raise ExplorerError(f"{path}: not a file written by `explorer steer --out` ({error}); {remake}") from None
    if result.model != name:
        raise ExplorerError(f"{path}: computed on '{result.model}', not '{name}'; {remake}")
    if result.episode != episode.id or record.get("episode_sha256") != _episode_sha256(episode):
        raise ExplorerError(f"{path}: computed on another version of episode '{episode.id}'; {remake}")
    if vectors is not None and record.get("vectors_built") != _vectors_build(vectors):
        raise ExplorerError(f"{path}: computed with other vectors than these; {remake[:-1]} --vectors YOURS`")
    return result
