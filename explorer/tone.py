"""Tone steering, the positive control for steering: does steering with ``happy`` make the text a
model writes more positive, and ``sad`` more negative?

Every other steering test here asks a subtle question (does a push shift a forced choice?). This
one asks the easiest question steering can answer; published work finds the answer is yes from
~124M parameters up. An instrument that cannot see this effect could not see a subtler one.

    result = ex.tone_response(model, vectors)              # the shipped configuration
    print(result)                                          # one verdict line per emotion
    result["happy"].slope, result.band(), result.rows()
    ex.load_tone_response("smollm2-135m-instruct")        # the shipped result, no model needed

Protocol (docs/STEERING.md, "Tone steering"):

1. The model continues neutral prompts (``explorer/data/tone_prompts.json``), sampled at
   ``temperature`` for ``max_new_tokens``; prompt ``i`` is sampled with seed ``seed + i`` in every
   condition. A prompt's conditions run as one batch, one row each, every row drawing from its own
   generator seeded alike (so a row is exactly what :func:`explorer.generate` writes under
   :func:`explorer.steer` with that seed, up to batched arithmetic).
2. Conditions: unsteered; each emotion at each non-zero strength; ``n_random`` random unit
   directions at the same strengths. Each is added at every token (prompt and continuation) of the
   steered ``layers``, ``strength`` × the layer's mean residual norm long, as :func:`explorer.steer`.
3. Judges, neither of them the steered model: VADER's compound valence (a lexicon, −1 … +1) of
   every continuation and, optionally, a second packaged model asked whether the text's mood is
   happy or sad (:class:`ToneJudge`, both orders of the two words, log-odds averaged).
4. Fluency guard: the unsteered model's mean per-token loss on each continuation, and its distinct
   word bigrams. A condition (direction, strength) whose mean loss exceeds ``max_loss_ratio`` × the
   unsteered one, or whose distinct-bigram rate falls below ``min_distinct_ratio`` × it, is flagged
   and left out of that direction's slope: collapse never counts as an effect.
5. Statistics per direction: the least-squares slope of valence on strength over its fluent
   conditions; for an emotion, the permutation p with the strength labels shuffled within each
   prompt, and the random directions' slopes (the same fit, same prompts and seeds) as the band it
   must leave: random steering of the same size can move valence by itself (odd text reads
   differently), so the emotion must move it further, in its predicted direction, than every
   random direction does. Shown: the predicted sign (``TONE_SIGN``) against unsteered, permutation
   p < 0.05, beyond every random direction, fluent at some non-zero strength.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .episodes import Message, render_text
from .errors import ExplorerError
from .generation import _stop_ids
from .hooks import Steering
from .models import DEFAULT_MODEL, Model
from .stats import control_p, finite, shown, slope, spread, within_group_permutation_p
from .steering import check_strength, steering_deltas
from .vectors import EmotionVectors, random_unit_directions

PROMPTS_FILE = Path(__file__).parent / "data" / "tone_prompts.json"
CONTROLS_DIR = Path(__file__).parent / "data" / "controls"

# The sign of the change in the text's valence that steering with an emotion predicts: positive
# emotions raise it, negative ones lower it. Emotions missing here get two-sided tests.
TONE_SIGN = {
    **dict.fromkeys(
        ("happy", "amused", "blissful", "content", "excited", "grateful", "hopeful", "loving", "playful", "proud",
         "relieved", "serene", "calm", "confident"),
        1,
    ),
    **dict.fromkeys(
        ("sad", "afraid", "angry", "anxious", "ashamed", "desperate", "disgusted", "embarrassed", "frustrated",
         "furious", "guilty", "hostile", "humiliated", "jealous", "lonely", "nervous", "panicked", "terrified",
         "brooding", "exhausted", "overwhelmed"),
        -1,
    ),
}  # fmt: skip

# The configuration the shipped result was run with (docs/STEERING.md: how it was chosen).
EMOTIONS = ("happy", "sad", "terrified")
STRENGTHS = (0.0, 0.05, 0.1)
LAYERS = (18, 20, 22)
N_RANDOM = 32
TEMPERATURE = 0.7
MAX_NEW_TOKENS = 24
MAX_LOSS_RATIO = 2.0
MIN_DISTINCT_RATIO = 0.5
JUDGE_WORDS = ("happy", "sad")


def tone_sign(emotion: str) -> int:
    """+1 (steering predicted to raise the text's valence), -1 (to lower it) or 0 (no prediction)."""
    return TONE_SIGN.get(emotion, 0)


def load_prompts(path: str | Path | None = None) -> list[str]:
    """The neutral prompts: a JSON file with a ``prompts`` list of strings (default: the shipped ones)."""
    path = Path(path) if path is not None else PROMPTS_FILE
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ExplorerError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise ExplorerError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    prompts = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ExplorerError(f"{path}: 'prompts' must be a list of non-empty strings")
    return prompts


# --- judges -------------------------------------------------------------------------------------


def vader_valence(texts: Sequence[str]) -> np.ndarray:
    """VADER's compound valence (−1 … +1) of each text: a lexicon and rules, no model."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyser = SentimentIntensityAnalyzer()
    return np.array([analyser.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


class ToneJudge:
    """A second model's zero-shot judgement of a text's tone: asked "is the mood of the text happy
    or sad? Answer with one word", with the two words named in both orders; the score is the mean
    over the two orders of log P(first token of "happy") − log P(first token of "sad"), each word
    with and without a leading space or capital. (Answering by letter, A or B, was tried first:
    qwen2.5-coder-0.5b-instruct picked "A" whatever the text, letter log-odds within ±0.3 for
    plainly happy and plainly sad texts; naming the word it does tell them apart.)"""

    def __init__(self, model: Model, words: tuple[str, str] = JUDGE_WORDS, batch_size: int = 16):
        model.require_local("the tone judge")
        self.model, self.words, self.batch_size = model, words, batch_size
        tokenizer = model.tokenizer
        self.ids = [
            sorted({tokenizer.encode(v, add_special_tokens=False)[0] for v in (w, f" {w}", w.capitalize())})
            for w in words
        ]
        if set(self.ids[0]) & set(self.ids[1]):
            raise ExplorerError(f"the tokenizer of '{model.name}' does not separate '{words[0]}' and '{words[1]}'")

    def _prompt(self, text: str, positive_first: bool) -> list[int]:
        a, b = self.words if positive_first else self.words[::-1]
        question = (
            f"Read this text:\n\n{text.strip() or '(nothing)'}\n\n"
            f"Is the mood of the text {a} or {b}? Answer with one word: {a} or {b}."
        )
        rendered = render_text(self.model, [Message("user", question)], reply=True)
        return self.model.tokenize(rendered, templated=self.model.chat)["input_ids"]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        scores = np.zeros(len(texts))
        for positive_first in (True, False):
            prompts = [self._prompt(t, positive_first) for t in texts]
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                ids = torch.zeros(len(chunk), max(map(len, chunk)), dtype=torch.long)
                for i, p in enumerate(chunk):  # right-padded: the real tokens never see the padding
                    ids[i, : len(p)] = torch.tensor(p)
                with torch.inference_mode():
                    logits = self.model.hf(input_ids=ids).logits
                last = logits[torch.arange(len(chunk)), torch.tensor([len(p) - 1 for p in chunk])].float()
                logp = torch.log_softmax(last, -1)
                positive = torch.logsumexp(logp[:, self.ids[0]], -1)
                negative = torch.logsumexp(logp[:, self.ids[1]], -1)
                scores[start : start + len(chunk)] += (positive - negative).numpy() / 2
        return scores


# --- generation under many conditions at once ---------------------------------------------------


def sample_rows(
    model: Model,
    prompt_ids: list[int],
    deltas: dict[int, torch.Tensor],
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> list[list[int]]:
    """Continue one prompt once per row of ``deltas[layer]`` (rows, width) and return each row's new
    token ids (stop token excluded). The prompt is read once, unsteered; each row's addition is then
    made at its last token (where the assistant's turn opens) and at every token written, which is
    ``ex.steer(..., positions=slice(len(prompt_ids) - 1, None))`` around :func:`explorer.generate`.
    A zero row is unsteered. Each row samples from its own generator seeded with ``seed`` (greedy
    at temperature 0)."""
    rows = next(iter(deltas.values())).shape[0]
    stops = _stop_ids(model)
    generators = [torch.Generator().manual_seed(seed) for _ in range(rows)]
    new: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    position = len(prompt_ids) - 1
    with torch.inference_mode():
        cache = None
        if position:
            first = model.hf(input_ids=torch.tensor([prompt_ids[:-1]]), use_cache=True)
            cache = getattr(first, "cache", None) or first.past_key_values
            cache.batch_repeat_interleave(rows)
        step = [prompt_ids[-1]] * rows
        with model.steered(Steering("tone", deltas)):
            for _ in range(max_new_tokens + 1):
                out = model.hf(
                    input_ids=torch.tensor(step)[:, None],
                    cache=cache,
                    use_cache=True,
                    cache_position=torch.tensor([position]),
                )
                cache = getattr(out, "cache", None) or out.past_key_values
                position += 1
                logits = out.logits[:, -1].float()
                step = []
                for r in range(rows):
                    if done[r] or len(new[r]) == max_new_tokens:
                        done[r] = True
                        step.append(prompt_ids[-1])  # a placeholder: this row's text has ended
                        continue
                    if temperature > 0:
                        probs = torch.softmax(logits[r] / temperature, -1)
                        token = int(torch.multinomial(probs, 1, generator=generators[r]))
                    else:
                        token = int(logits[r].argmax())
                    done[r] = token in stops
                    if not done[r]:
                        new[r].append(token)
                    step.append(token)
                if all(done) or all(len(n) == max_new_tokens for n in new):
                    break
    return new


def continuation_loss(model: Model, prompt_ids: list[int], continuations: Sequence[Sequence[int]]) -> np.ndarray:
    """The model's (unsteered) mean per-token loss in nats on each continuation after the prompt
    (NaN for an empty one). Run outside any steering block."""
    out = np.full(len(continuations), np.nan)
    keep = [i for i, c in enumerate(continuations) if len(c)]
    if not keep:
        return out
    width = max(len(continuations[i]) for i in keep)
    ids = torch.zeros(len(keep), width, dtype=torch.long)
    for row, i in enumerate(keep):
        ids[row, : len(continuations[i])] = torch.tensor(continuations[i])
    n = len(prompt_ids)
    with torch.inference_mode():
        first = model.hf(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        cache = getattr(first, "cache", None) or first.past_key_values
        cache.batch_repeat_interleave(len(keep))
        # right-padded: no real token attends to the padding after it
        logits = model.hf(
            input_ids=ids, cache=cache, use_cache=True, cache_position=torch.arange(n, n + width)
        ).logits.float()
    # the first new token is predicted by the prompt's last position, the rest by the continuation
    logits = torch.cat([first.logits[:, -1:].float().expand(len(keep), -1, -1), logits[:, :-1]], 1)
    nll = -torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    for row, i in enumerate(keep):
        out[i] = float(nll[row, : len(continuations[i])].mean())
    return out


def distinct_bigrams(text: str) -> float:
    """Distinct word bigrams / all word bigrams (1 = no repetition); NaN under two words."""
    words = text.lower().split()
    pairs = list(zip(words, words[1:]))
    return len(set(pairs)) / len(pairs) if pairs else float("nan")


# --- statistics ----------------------------------------------------------------------------------


def _grid(table: pd.DataFrame, direction: str, column: str, strengths: Sequence[float]) -> np.ndarray:
    """(prompts, strengths) of ``column`` for ``direction``, strength 0 from the unsteered rows."""
    rows = table[(table["direction"] == direction) | (table["kind"] == "unsteered")]
    grid = rows.pivot_table(index="prompt", columns="strength", values=column, aggfunc="first", dropna=False)
    return grid.reindex(columns=list(strengths)).to_numpy(dtype=np.float64)


def conditions(table: pd.DataFrame, max_loss_ratio: float, min_distinct_ratio: float) -> pd.DataFrame:
    """Per (direction, strength): mean valence (and judge score), mean loss and distinct-bigram
    rate, their ratios to the unsteered condition, and whether it passes the fluency guard."""
    table = table.copy()
    measures = ["valence", "loss", "distinct"] + (["judge"] if "judge" in table else [])
    grouped = table.groupby(["direction", "kind", "strength"], sort=False)[measures].mean().reset_index()
    base = grouped[grouped["kind"] == "unsteered"].iloc[0]
    grouped["loss_ratio"] = grouped["loss"] / base["loss"]
    grouped["distinct_ratio"] = grouped["distinct"] / base["distinct"]
    grouped["fluent"] = (grouped["loss_ratio"] <= max_loss_ratio) & (grouped["distinct_ratio"] >= min_distinct_ratio)
    return grouped


def _slope_over(strengths: np.ndarray, grid: np.ndarray, keep: np.ndarray) -> float | None:
    """Slope of the grid's values on strength over the kept strength columns (prompts pooled)."""
    if keep.sum() < 2:
        return None
    x = np.tile(strengths[keep], grid.shape[0])
    y = grid[:, keep].ravel()
    ok = np.isfinite(y)
    return finite(slope(x[ok], y[ok, None])[0]) if ok.sum() > 2 else None


def _beyond(value: float, controls: np.ndarray, sign: int) -> bool:
    """Beyond every control: further in the predicted direction than all of them (in |value| when
    there is no prediction)."""
    if sign:
        return bool((sign * controls < sign * value).all())
    return bool((np.abs(controls) < abs(value)).all())


def _rank(value: float, controls: np.ndarray, sign: int) -> int:
    """1 + the controls further than ``value`` in the predicted direction (in |value| without one)."""
    if sign:
        return int((sign * controls > sign * value).sum()) + 1
    return int((np.abs(controls) > abs(value)).sum()) + 1


@dataclass(frozen=True)
class ToneEmotion:
    """One emotion's tone dose-response, judged by VADER (and the second judge when it ran).

    ``slope`` is valence per unit of strength over the fluent strengths; ``effect`` the mean change
    in valence from unsteered to the strongest fluent strength; ``permutation_p`` the two-sided p
    of the slope with strength labels shuffled within each prompt; ``random_p`` (1 + random
    directions whose slope is at least as far in the predicted direction) / (1 + n), two-sided for
    an emotion with no prediction; ``beyond_random`` whether the slope is further than all of them.
    """

    emotion: str
    predicted_sign: int
    slope: float | None
    effect: float | None
    permutation_p: float | None
    random_p: float | None
    beyond_random: bool
    random_rank: str
    fluent_strengths: tuple[float, ...]
    excluded_strengths: tuple[float, ...]
    valence_at: dict[str, float]
    loss_ratio_at: dict[str, float]
    distinct_ratio_at: dict[str, float]
    judge_slope: float | None = None
    judge_permutation_p: float | None = None
    judge_random_p: float | None = None
    judge_at: dict[str, float] | None = None

    @property
    def shown(self) -> bool:
        """Predicted sign, permutation p < 0.05, beyond every random direction, fluent at some strength."""
        fluent = any(s != 0 for s in self.fluent_strengths)
        return fluent and self.beyond_random and shown(self.slope, [self.permutation_p], self.predicted_sign)

    @property
    def judge_agrees(self) -> bool | None:
        """Whether the second judge's slope has the predicted sign with p < 0.05 (None: no judge)."""
        if self.judge_slope is None:
            return None
        return shown(self.judge_slope, [self.judge_permutation_p], self.predicted_sign)

    def verdict(self) -> str:
        def fmt(value, spec=".3f"):
            return "–" if value is None else format(value, spec)

        line = (
            f"{self.emotion}: VADER valence slope {fmt(self.slope, '+.3f')} per unit strength, effect "
            f"{fmt(self.effect, '+.3f')} (permutation p {fmt(self.permutation_p)}, random p {fmt(self.random_p)}, "
            f"rank {self.random_rank}{'' if self.beyond_random else ', inside the random band'})"
        )
        if self.excluded_strengths:
            line += f"; strengths {', '.join(f'{s:g}' for s in self.excluded_strengths)} excluded as not fluent"
        if self.judge_slope is not None:
            line += f"; judge slope {fmt(self.judge_slope, '+.2f')} (p {fmt(self.judge_permutation_p)})"
        return line + (": shown" if self.shown else ": not shown")

    __str__ = verdict

    def to_dict(self) -> dict:
        out = dict(vars(self))
        out["fluent_strengths"], out["excluded_strengths"] = list(self.fluent_strengths), list(self.excluded_strengths)
        out["shown"] = self.shown
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ToneEmotion:
        data = {k: v for k, v in data.items() if k != "shown"}
        data["fluent_strengths"] = tuple(data["fluent_strengths"])
        data["excluded_strengths"] = tuple(data["excluded_strengths"])
        return cls(**data)


@dataclass(frozen=True)
class ToneResponse:
    """:func:`tone_response`'s answer: per emotion a :class:`ToneEmotion`, the random directions'
    slopes, and ``table`` (one row per prompt and condition: prompt, direction, kind, strength,
    text, tokens, valence, loss, distinct, and judge when it ran)."""

    model: str
    layers: tuple[int, ...]
    strengths: tuple[float, ...]
    prompts: tuple[str, ...]
    seed: int
    temperature: float
    max_new_tokens: int
    n_random: int
    judge: str | None
    max_loss_ratio: float
    min_distinct_ratio: float
    emotions: dict[str, ToneEmotion]
    random_slopes: tuple[float, ...]
    random_judge_slopes: tuple[float, ...] | None
    baseline: dict[str, float | None]
    table: pd.DataFrame = field(repr=False)

    def __getitem__(self, emotion: str) -> ToneEmotion:
        if emotion not in self.emotions:
            raise ExplorerError(f"'{emotion}' was not steered; this result has {', '.join(self.emotions)}")
        return self.emotions[emotion]

    @property
    def shown(self) -> bool:
        """True when every emotion's tone change is shown."""
        return bool(self.emotions) and all(e.shown for e in self.emotions.values())

    def conditions(self) -> pd.DataFrame:
        """Per (direction, strength): means, fluency ratios and the fluency flag."""
        return conditions(self.table, self.max_loss_ratio, self.min_distinct_ratio)

    def band(self, low: float = 2.5, high: float = 97.5) -> pd.DataFrame:
        """Per strength, the random directions' mean-valence percentiles (a plot's grey band)."""
        frame = self.conditions()
        randoms = frame[frame["kind"].isin(["random", "unsteered"])]
        if not self.n_random:
            raise ExplorerError("tone_response ran without random directions; run it with n_random=16 or more")
        grouped = randoms.groupby("strength")["valence"]
        return pd.DataFrame(
            {"low": grouped.quantile(low / 100), "median": grouped.median(), "high": grouped.quantile(high / 100)}
        ).reset_index()

    def random_band(self) -> dict[str, float | None] | None:
        """min, 2.5th and 97.5th percentile and max of the random directions' valence slopes."""
        return spread(self.random_slopes)

    def rows(self) -> list[dict]:
        """One flat row per emotion: the effect, its tests, the random band and the fluency."""
        band = self.random_band() or {}
        out = []
        for e in self.emotions.values():
            out.append({
                "model": self.model,
                "layers": ",".join(map(str, self.layers)),
                "emotion": e.emotion,
                "predicted_sign": e.predicted_sign,
                "baseline_valence": self.baseline["valence"],
                "slope": e.slope,
                "effect": e.effect,
                "permutation_p": e.permutation_p,
                "random_p": e.random_p,
                "random_min": band.get("min"),
                "random_max": band.get("max"),
                "beyond_random": e.beyond_random,
                "max_loss_ratio": max((e.loss_ratio_at[f"{s:+g}"] for s in e.fluent_strengths), default=None),
                "excluded_strengths": ",".join(f"{s:g}" for s in e.excluded_strengths),
                "judge_slope": e.judge_slope,
                "judge_permutation_p": e.judge_permutation_p,
                "shown": e.shown,
            })  # fmt: skip
        return out

    def try_prompt(
        self, model: Model, vectors: EmotionVectors, prompt: str, strength: float | None = None, seed: int = 0
    ) -> pd.DataFrame:
        """Continue your own ``prompt`` under this result's configuration: unsteered and steered with
        each of its emotions, at its layers, temperature and length, the prompt read unsteered, all
        conditions sampled with the same ``seed`` — as the run treated each of its prompts.

        ``strength`` defaults to the run's strongest. Returns one row per condition: direction,
        strength, text, tokens, valence (VADER), loss (the unsteered model's, nats/token), distinct.
        One prompt is an illustration, not a test: the verdict needs the run's 24 prompts and its
        random directions."""
        if model.name != self.model:
            raise ExplorerError(f"this tone result is for '{self.model}', not '{model.name}'; load that model")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ExplorerError("try_prompt: the prompt is empty; give the user turn to continue as a string")
        strength = max(self.strengths) if strength is None else check_strength(strength)
        if strength == 0:
            raise ExplorerError("try_prompt: strength 0 is the unsteered row already; give e.g. 0.1")
        vectors.check_model(model)
        plan = _Plan(model, vectors, list(self.emotions), [0.0, strength], list(self.layers), 0, seed)
        rows = plan.run(0, prompt, self.max_new_tokens, self.temperature)
        return pd.DataFrame(rows).drop(columns=["prompt", "kind"])

    def verdict(self) -> str:
        head = (
            f"tone steering on {self.model} (layers {list(self.layers)}, strengths {list(self.strengths)}, "
            f"{len(self.prompts)} prompts, {self.n_random} random directions; unsteered valence "
            f"{self.baseline['valence']:+.3f}):"
        )
        return "\n".join([head, *(e.verdict() for e in self.emotions.values())])

    __str__ = verdict

    def to_dict(self, table: bool = True) -> dict:
        """Plain JSON values (the CLI's output); ``table`` includes every continuation."""
        out = {
            "model": self.model,
            "layers": list(self.layers),
            "strengths": list(self.strengths),
            "prompts": list(self.prompts),
            "seed": self.seed,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "n_random": self.n_random,
            "judge": self.judge,
            "max_loss_ratio": self.max_loss_ratio,
            "min_distinct_ratio": self.min_distinct_ratio,
            "baseline": self.baseline,
            "shown": self.shown,
            "emotions": {e: d.to_dict() for e, d in self.emotions.items()},
            "random_slopes": list(self.random_slopes),
            "random_band": self.random_band(),
            "random_judge_slopes": None if self.random_judge_slopes is None else list(self.random_judge_slopes),
        }
        if table:
            records = self.table.to_dict(orient="records")
            out["table"] = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                             for k, v in r.items()} for r in records]  # fmt: skip
        return out

    def to_json(self, table: bool = True, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(table), indent=indent)

    @classmethod
    def from_dict(cls, data: dict, source: str = "tone result") -> ToneResponse:
        """The inverse of :meth:`to_dict` (with its table); the summary is read back as stored."""
        try:
            table = pd.DataFrame(data["table"])
            return cls(
                model=data["model"],
                layers=tuple(data["layers"]),
                strengths=tuple(data["strengths"]),
                prompts=tuple(data["prompts"]),
                seed=data["seed"],
                temperature=data["temperature"],
                max_new_tokens=data["max_new_tokens"],
                n_random=data["n_random"],
                judge=data["judge"],
                max_loss_ratio=data["max_loss_ratio"],
                min_distinct_ratio=data["min_distinct_ratio"],
                emotions={e: ToneEmotion.from_dict(d) for e, d in data["emotions"].items()},
                random_slopes=tuple(data["random_slopes"]),
                random_judge_slopes=None if data["random_judge_slopes"] is None else tuple(data["random_judge_slopes"]),
                baseline=data["baseline"],
                table=table.astype({c: float for c in ("valence", "loss", "distinct") if c in table}),
            )
        except (KeyError, TypeError) as exc:
            raise ExplorerError(
                f"{source}: not a tone result ({type(exc).__name__}: {exc}); write one with `explorer tone --out`"
            ) from None


def summarise(
    table: pd.DataFrame,
    emotions: Sequence[str],
    strengths: Sequence[float],
    max_loss_ratio: float = MAX_LOSS_RATIO,
    min_distinct_ratio: float = MIN_DISTINCT_RATIO,
    seed: int = 0,
) -> tuple[dict[str, ToneEmotion], tuple[float, ...], tuple[float, ...] | None]:
    """The statistics of a tone table: per emotion a :class:`ToneEmotion`, the random directions'
    valence slopes and (when the table has a ``judge`` column) their judge slopes. Pure arithmetic
    on the table, so a stored result's numbers can be recomputed from its table."""
    strengths = np.asarray(sorted(strengths), dtype=np.float64)
    frame = conditions(table, max_loss_ratio, min_distinct_ratio)
    has_judge = "judge" in table and table["judge"].notna().any()

    def fluent_mask(direction: str) -> np.ndarray:
        rows = frame[frame["direction"] == direction].set_index("strength")["fluent"]
        return np.array([s == 0 or bool(rows.get(s, False)) for s in strengths])

    def slopes_of(direction: str, column: str) -> float | None:
        return _slope_over(strengths, _grid(table, direction, column, strengths), fluent_mask(direction))

    randoms = [d for d in dict.fromkeys(table.loc[table["kind"] == "random", "direction"])]
    random_slopes = tuple(slopes_of(d, "valence") for d in randoms)
    random_judge = tuple(slopes_of(d, "judge") for d in randoms) if has_judge else None
    valid = np.array([s for s in random_slopes if s is not None], dtype=np.float64)
    valid_judge = np.array([s for s in random_judge or () if s is not None], dtype=np.float64)

    summary = {}
    for e in emotions:
        keep = fluent_mask(e)
        grid = _grid(table, e, "valence", strengths)
        value = _slope_over(strengths, grid, keep)
        sign = tone_sign(e)
        nonzero = [i for i, s in enumerate(strengths) if s != 0 and keep[i]]
        top = max(nonzero, key=lambda i: (abs(strengths[i]), strengths[i])) if nonzero else None
        zero = int(np.flatnonzero(strengths == 0)[0])
        rows = frame[frame["direction"].isin([e]) | (frame["kind"] == "unsteered")].set_index("strength")
        at = {f"{s:+g}": finite(rows.loc[s, "valence"]) for s in strengths if s in rows.index}
        ok_grid = grid[:, keep]
        judge = {}
        if has_judge:
            judge_grid = _grid(table, e, "judge", strengths)
            judge_slope = _slope_over(strengths, judge_grid, keep)
            judge = {
                "judge_slope": judge_slope,
                "judge_permutation_p": None if judge_slope is None else within_group_permutation_p(
                    strengths[keep], judge_grid[:, keep], seed=seed),
                "judge_random_p": None if judge_slope is None else control_p(judge_slope, valid_judge, sign),
                "judge_at": {f"{s:+g}": finite(rows.loc[s, "judge"]) for s in strengths if s in rows.index},
            }  # fmt: skip
        summary[e] = ToneEmotion(
            emotion=e,
            predicted_sign=sign,
            slope=value,
            effect=None if top is None else finite(np.nanmean(grid[:, top] - grid[:, zero])),
            permutation_p=None if value is None else within_group_permutation_p(strengths[keep], ok_grid, seed=seed),
            random_p=None if value is None else control_p(value, valid, sign),
            beyond_random=value is not None and bool(len(valid)) and _beyond(value, valid, sign),
            random_rank="–" if value is None else f"{_rank(value, valid, sign)} of {len(valid) + 1}",
            fluent_strengths=tuple(float(s) for s in strengths[keep]),
            excluded_strengths=tuple(float(s) for s in strengths[~keep]),
            valence_at=at,
            loss_ratio_at={f"{s:+g}": finite(rows.loc[s, "loss_ratio"]) for s in strengths if s in rows.index},
            distinct_ratio_at={f"{s:+g}": finite(rows.loc[s, "distinct_ratio"]) for s in strengths if s in rows.index},
            **judge,
        )
    return summary, random_slopes, random_judge


def tone_response(
    model: Model,
    vectors: EmotionVectors,
    emotions: Sequence[str] = EMOTIONS,
    strengths: Sequence[float] = STRENGTHS,
    layers: int | Sequence[int] | str | None = LAYERS,
    prompts: Sequence[str] | str | Path | None = None,
    n_random: int = N_RANDOM,
    seed: int = 0,
    temperature: float = TEMPERATURE,
    max_new_tokens: int = MAX_NEW_TOKENS,
    judge: Model | str | None = None,
    max_loss_ratio: float = MAX_LOSS_RATIO,
    min_distinct_ratio: float = MIN_DISTINCT_RATIO,
    progress: Callable[[int, int], None] | None = None,
) -> ToneResponse:
    """Steer ``model`` with each emotion (and ``n_random`` random directions of the same norm) while
    it continues neutral prompts, and test whether the text's valence moves the predicted way.

    Args:
        model, vectors: from :func:`explorer.load_model` / :func:`explorer.load_vectors`.
        emotions: emotions to steer with; ``TONE_SIGN`` gives each one's predicted sign.
        strengths: fractions of the layer's mean residual norm (0, the unsteered condition, is
            always included); at least one non-zero.
        layers: steered layers, as :meth:`Model.resolve_layers` (default: the shipped configuration's).
        prompts: a list of prompts, a JSON file of them, or None for the shipped neutral prompts.
        n_random: random unit directions steered at the same strengths (the band to leave; 16 or more
            for a verdict).
        seed: prompt ``i`` is sampled with seed ``seed + i`` in every condition; the random
            directions are ``random_unit_directions(n_random, width, seed + 1000)``.
        temperature, max_new_tokens: sampling of each continuation.
        judge: a second model (or its zoo name) for the zero-shot happy/sad judgement of every
            continuation (:class:`ToneJudge`); None to skip it (it is the slow part: a forward
            pass per text and order).
        max_loss_ratio, min_distinct_ratio: the fluency guard (see the module's docstring).
        progress: called with (prompts done, prompts in all).

    Returns a :class:`ToneResponse`; ``print(result)`` gives one verdict line per emotion.
    """
    model.require_local("tone steering")
    vectors.check_model(model)
    if model.steering:
        raise ExplorerError(
            f"tone_response steers by itself, but '{model.name}' is already steered ({model.steering.describe()}); "
            "call it outside `with ex.steer(...)`"
        )
    emotions = list(dict.fromkeys(emotions))
    if not emotions:
        raise ExplorerError("tone_response: no emotion given; name at least one, e.g. emotions=['happy', 'sad']")
    for emotion in emotions:
        vectors.index(emotion)
    strengths = sorted({check_strength(s) for s in strengths} | {0.0})
    if len(strengths) < 2:
        raise ExplorerError("tone_response: give at least one non-zero strength, e.g. strengths=[0, 0.1, 0.2]")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise ExplorerError(f"tone_response: n_random is {n_random!r}; use a whole number >= 0, e.g. 16")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 2:
        raise ExplorerError(f"tone_response: max_new_tokens is {max_new_tokens!r}; use a whole number >= 2, e.g. 32")
    if not isinstance(temperature, int | float) or not 0 <= float(temperature) <= 5:
        raise ExplorerError(f"tone_response: temperature is {temperature!r}; use a number in 0 … 5, e.g. 0.7")
    if prompts is None or isinstance(prompts, str | Path):
        prompts = load_prompts(prompts)
    prompts = list(prompts)
    if len(prompts) < 2 or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ExplorerError("tone_response: give at least two prompts, each a non-empty string")
    layers = model.resolve_layers(layers)
    judge_model = None
    if judge is not None:
        from .models import load_model

        judge_model = load_model(judge) if isinstance(judge, str) else judge

    plan = _Plan(model, vectors, emotions, strengths, layers, n_random, seed)
    records = []
    for i in range(len(prompts)):
        records += plan.run(i, prompts[i], max_new_tokens, float(temperature))
        if progress:
            progress(i + 1, len(prompts))
    table = pd.DataFrame(records)
    if judge_model is not None:
        table["judge"] = ToneJudge(judge_model).score(table["text"].tolist())
    return assemble(
        table, model.name, emotions, strengths, layers, prompts, seed, float(temperature), max_new_tokens, n_random,
        None if judge_model is None else judge_model.name, max_loss_ratio, min_distinct_ratio,
    )  # fmt: skip


class _Plan:
    """The conditions of one tone run, stacked one row each: unsteered, then every direction
    (emotions, then random ones) at every non-zero strength."""

    def __init__(self, model, vectors, emotions, strengths, layers, n_random, seed):
        self.model, self.seed = model, seed
        directions = [(e, "emotion", vectors[e]) for e in emotions]
        for i, d in enumerate(random_unit_directions(n_random, model.width, seed=seed + 1000)):
            directions.append((f"random {i}", "random", d.float()))
        nonzero = [s for s in strengths if s != 0]
        self.conditions = [("unsteered", "unsteered", 0.0)] + [(n, k, s) for n, k, _ in directions for s in nonzero]
        parts: dict[int, list[torch.Tensor]] = {layer: [torch.zeros(1, model.width)] for layer in layers}
        for _, _, v in directions:
            for s in nonzero:
                _, deltas = steering_deltas(model, v, s, layers, vectors)
                for layer in layers:
                    parts[layer].append(deltas[layer].float())
        self.deltas = {layer: torch.cat(rows) for layer, rows in parts.items()}

    def run(self, i: int, prompt: str, max_new_tokens: int, temperature: float) -> list[dict]:
        """Prompt ``i``'s rows of the table: every condition's continuation, sampled with seed + i."""
        model = self.model
        text = render_text(model, [Message("user", prompt)], reply=True)
        ids = model.tokenize(text, templated=model.chat)["input_ids"]
        if len(ids) + max_new_tokens > model.context_limit:
            raise ExplorerError(f"prompt {i}: {len(ids)} + {max_new_tokens} tokens exceed what '{model.name}' reads")
        new = sample_rows(model, ids, self.deltas, max_new_tokens, temperature, self.seed + i)
        texts = [model.tokenizer.decode(t, skip_special_tokens=True).strip() for t in new]
        losses = continuation_loss(model, ids, new)
        valence = vader_valence(texts)
        return [
            {"prompt": i, "direction": name, "kind": kind, "strength": float(s), "text": t, "tokens": len(toks),
             "valence": float(v), "loss": float(loss), "distinct": distinct_bigrams(t)}
            for (name, kind, s), t, toks, v, loss in zip(self.conditions, texts, new, valence, losses)
        ]  # fmt: skip


def assemble(
    table: pd.DataFrame,
    model_name: str,
    emotions: Sequence[str],
    strengths: Sequence[float],
    layers: Sequence[int],
    prompts: Sequence[str],
    seed: int,
    temperature: float,
    max_new_tokens: int,
    n_random: int,
    judge: str | None,
    max_loss_ratio: float = MAX_LOSS_RATIO,
    min_distinct_ratio: float = MIN_DISTINCT_RATIO,
) -> ToneResponse:
    """A :class:`ToneResponse` from a finished table (every prompt's rows) and the run's settings."""
    table = table.sort_values(["prompt"], kind="stable").reset_index(drop=True)
    summary, random_slopes, random_judge = summarise(
        table, emotions, strengths, max_loss_ratio, min_distinct_ratio, seed=seed
    )
    unsteered = table[table["kind"] == "unsteered"]
    has_judge = "judge" in table
    baseline = {
        "valence": float(unsteered["valence"].mean()),
        "valence_sd": float(unsteered["valence"].std()),
        "loss": finite(unsteered["loss"].mean()),
        "distinct": finite(unsteered["distinct"].mean()),
        "judge": finite(unsteered["judge"].mean()) if has_judge else None,
    }
    return ToneResponse(
        model=model_name,
        layers=tuple(int(x) for x in layers),
        strengths=tuple(float(s) for s in sorted(strengths)),
        prompts=tuple(prompts),
        seed=int(seed),
        temperature=float(temperature),
        max_new_tokens=int(max_new_tokens),
        n_random=int(n_random),
        judge=judge,
        max_loss_ratio=float(max_loss_ratio),
        min_distinct_ratio=float(min_distinct_ratio),
        emotions=summary,
        random_slopes=random_slopes,
        random_judge_slopes=random_judge,
        baseline=baseline,
        table=table,
    )


def shipped_tone_path(model_name: str = DEFAULT_MODEL) -> Path:
    """Where the shipped tone result for ``model_name`` lives (it may not exist)."""
    return CONTROLS_DIR / f"tone-{model_name.replace('/', '--')}.json"


def load_tone_response(name_or_path: str | Path = DEFAULT_MODEL) -> ToneResponse:
    """A stored :class:`ToneResponse`: a file written by ``explorer tone --out``, or the name of a
    model whose result ships with the package (``explorer/data/controls/tone-MODEL.json``)."""
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = shipped_tone_path(str(name_or_path))
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExplorerError(
            f"{path}: no tone result there; run `explorer tone --out {path.name}` to make one"
        ) from None
    except json.JSONDecodeError as exc:
        raise ExplorerError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return ToneResponse.from_dict(data, source=str(path))
