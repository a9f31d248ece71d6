"""Controls of the read-out machinery, measured on the real model and shipped as small JSON files.

1. **Context sensitivity, explicit to implicit** (:func:`context_control`). Three episodes with
   word-for-word identical assistant turns and identical failure reports, whose user feedback is
   framed three ways: explicitly more desperate in words (``lost-thesis-explicit``), more pressured
   without emotion words (``lost-thesis-pressure``, like ``impossible-code``) and calm
   (``lost-thesis-calm``). Each contrast runs :func:`explorer.compare_spans` on the feedback tokens
   (what the model reads) and on the assistant tokens after them (what it then says). The
   explicit set against the calm one is the positive control: on the feedback tokens desperate and
   afraid should rise beyond random directions, or the episode machinery cannot see even words.
2. **Numeric escalation against a harmless twin**: :func:`explorer.escalation_test`.

:func:`control_results` runs both and returns a :class:`ControlResults` (tables and verdicts);
``explorer controls --model M --out explorer/data/controls/readout-M.json`` writes the shipped file and
:func:`load_control_results` reads it back without the model. docs/CONTROLS.md has the numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import __version__, cache
from .comparison import N_RANDOM, Comparison, LayerTest, compare_spans
from .episodes import load_episode
from .errors import ExplorerError
from .escalation import EscalationTest, escalation_tests
from .models import Model
from .stats import ALPHA, predicted_sign
from .vectors import EmotionVectors

CONTROLS_DIR = Path(__file__).parent / "data" / "controls"
PREFIX = "readout-"  # the folder holds other controls' files too (tone-MODEL.json)
# contrast → (episode, control): the three framings of the same failed attempts, pairwise
CONTEXT_CONTRASTS = {
    "explicit": ("lost-thesis-explicit", "lost-thesis-calm"),  # the positive control
    "implicit": ("lost-thesis-pressure", "lost-thesis-calm"),  # what impossible-code asks
    "words": ("lost-thesis-explicit", "lost-thesis-pressure"),  # emotion words beyond stakes
}
CONTEXT_EMOTIONS = ("desperate", "afraid", "calm")
SPANS = ("feedback", "assistant")


@dataclass(frozen=True, eq=False)
class ContextControl:
    """:func:`context_control`'s answer: one :class:`Comparison` per contrast, span and emotion.

    ``result.at("explicit", "desperate", "feedback")`` is one :class:`LayerTest` (the rule layer
    unless ``layer`` is given); ``result.positive_control`` the one that must rise; ``print(result)``
    the verdicts at the rule layer; ``rows()`` every layer's flat row.
    """

    model: str
    rule_layer: int
    contrasts: Mapping[str, tuple[str, str]]
    comparisons: tuple[tuple[str, Comparison], ...] = field(default=())

    def comparison(self, contrast: str, emotion: str, span: str = "feedback") -> Comparison:
        for name, result in self.comparisons:
            if name == contrast and result.emotion == emotion and result.span == span:
                return result
        have = sorted({(n, c.emotion, c.span) for n, c in self.comparisons})
        raise ExplorerError(f"no comparison for ({contrast!r}, {emotion!r}, {span!r}); this result has {have}")

    def at(self, contrast: str, emotion: str, span: str = "feedback", layer: int | None = None) -> LayerTest:
        """One test: a contrast (``"explicit"``, ``"implicit"``, ``"words"``), an emotion, a span
        (``"feedback"`` or ``"assistant"``) and a layer (default: the rule layer)."""
        return self.comparison(contrast, emotion, span).at(self.rule_layer if layer is None else layer)

    @property
    def positive_control(self) -> LayerTest:
        """Desperate on the feedback tokens, explicitly desperate feedback vs calm, rule layer."""
        return self.at("explicit", "desperate", "feedback")

    def rows(self) -> list[dict]:
        """One flat row per contrast, span, emotion and layer (:meth:`LayerTest.row` plus names)."""
        out = []
        for contrast, result in self.comparisons:
            ids = {"contrast": contrast, "episode": result.episode, "control": result.control, "span": result.span}
            out += [{**ids, **test.row()} for test in result.layers]
        return out

    def per_attempt(self) -> list[dict]:
        """Per contrast, emotion and attempt at the rule layer: the mean z on the feedback and the
        assistant tokens in episode and control (the curves behind each slope)."""
        out = []
        for contrast, result in self.comparisons:
            if result.span != SPANS[0] and any(r.span == SPANS[0] for _, r in self.comparisons):
                continue  # the means do not depend on the span tested: keep them once
            for a in result.at(self.rule_layer).per_attempt:
                out.append({"contrast": contrast, "emotion": result.emotion, **vars(a)})
        return out

    def verdicts(self) -> list[str]:
        """One line per contrast, span and emotion at the rule layer, then the positive control's."""
        lines = [
            f"[{contrast}: {result.episode} vs {result.control}] {result.at(self.rule_layer).verdict()}"
            for contrast, result in self.comparisons
        ]
        return lines + [positive_control_verdict(self.positive_control)]

    def __str__(self) -> str:
        return "\n".join(self.verdicts())

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "rule_layer": self.rule_layer,
            "contrasts": {k: list(v) for k, v in self.contrasts.items()},
            "comparisons": [{"contrast": name, **result.to_dict()} for name, result in self.comparisons],
        }


def positive_control_verdict(test: LayerTest, alpha: float = ALPHA) -> str:
    """Whether the positive control passed: the emotion moves in its predicted direction beyond
    random directions (random p < ``alpha``), and whether all three tests also call it shown."""
    sign = predicted_sign(test.emotion) or 1
    rises = test.slope_z is not None and test.slope_z * sign > 0 and (test.random.p or 1) < alpha

    def fmt(value, spec=".3f"):
        return "–" if value is None else format(value, spec)

    null = None if test.shuffled is None else test.shuffled.p
    return (
        f"positive control ({test.emotion} on {test.span} tokens, layer {test.layer}): "
        f"{'moves' if rises else 'does not move'} beyond random directions "
        f"(slope {fmt(test.slope_z, '+.3f')} z/attempt, random p {fmt(test.random.p)}, rank {test.rank}/{test.of}); "
        f"{'shown' if test.shown else 'not shown'} by all three tests "
        f"(permutation p {fmt(test.permutation_p)}, shuffled-label p {fmt(null)})"
    )


def context_control(
    model: Model,
    vectors: EmotionVectors,
    emotions: Sequence[str] = CONTEXT_EMOTIONS,
    contrasts: Mapping[str, tuple[str, str]] | Sequence[str] | None = None,
    layers: Sequence[int] | str | int | None = None,
    n_random: int = N_RANDOM,
    mde: bool | Sequence[int] = True,
    spans: Sequence[str] = SPANS,
) -> ContextControl:
    """Context sensitivity from explicit to implicit: each contrast of the lost-thesis set tested
    on the feedback tokens and on the assistant tokens, from two forward passes per contrast.

    Args:
        model, vectors: as for :func:`explorer.trace`.
        emotions: tested from the same passes (all emotions are read for the specificity rank).
        contrasts: names of :data:`CONTEXT_CONTRASTS` ("explicit": the positive control,
            "implicit", "words"), or your own ``{name: (episode id or file, control id or file)}``.
        layers, n_random, mde: as for :func:`explorer.compare_emotions` (default: the rule layer).
        spans: ``"feedback"`` and/or ``"assistant"`` (:func:`explorer.comparison.span_roles`).
    """
    if contrasts is None:
        contrasts = dict(CONTEXT_CONTRASTS)
    elif not isinstance(contrasts, Mapping):
        unknown = [c for c in contrasts if c not in CONTEXT_CONTRASTS]
        if isinstance(contrasts, str) or unknown or not contrasts:
            raise ExplorerError(
                f"contrasts {contrasts!r}: give names from {', '.join(CONTEXT_CONTRASTS)} "
                "or a mapping {name: (episode, control)}"
            )
        contrasts = {c: CONTEXT_CONTRASTS[c] for c in contrasts}
    comparisons = []
    for name, (episode_id, control_id) in contrasts.items():
        by_span = compare_spans(
            model, load_episode(episode_id), vectors, list(emotions), load_episode(control_id),
            layers, n_random, mde, spans,
        )  # fmt: skip
        comparisons += [(name, result) for span in spans for result in by_span[span]]
    rule = model.default_layer
    tested = comparisons[0][1].layers if comparisons else ()
    if tested and rule not in [t.layer for t in tested]:
        rule = tested[0].layer  # a scan without the rule layer: report its first layer
    return ContextControl(model.name, rule, dict(contrasts), tuple(comparisons))


# --- the shipped results ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ControlResults:
    """Both controls as tables, as shipped in ``explorer/data/controls/readout-MODEL.json``.

    ``context``: one row per contrast, span, emotion and layer (:meth:`ContextControl.rows`);
    ``context_attempts``: per-attempt means at the rule layer; ``escalation``: one row per emotion
    and template plus the pooled test (:meth:`EscalationTest.rows`); ``escalation_levels``: the
    read-out per level of each danger prompt and its twin; ``verdicts``: the one-line answers.
    """

    model: str
    rule_layer: int
    context: pd.DataFrame
    context_attempts: pd.DataFrame
    escalation: pd.DataFrame
    escalation_levels: pd.DataFrame
    verdicts: tuple[str, ...]
    meta: Mapping = field(default_factory=dict)

    def positive_control(self) -> dict:
        """The rule-layer row of desperate on the feedback tokens, explicit vs calm."""
        rows = self.context[
            (self.context.contrast == "explicit")
            & (self.context.span == "feedback")
            & (self.context.emotion == "desperate")
            & (self.context.layer == self.rule_layer)
        ]
        if rows.empty:
            raise ExplorerError("these results have no positive-control row (explicit, feedback, desperate)")
        return rows.iloc[0].to_dict()

    def lines(self, section: str) -> list[str]:
        """The verdict lines of one section: a contrast ('explicit', 'implicit', 'words'),
        'escalation', or 'positive control' (the one line saying whether it passed)."""
        if section == "positive control":
            return [line for line in self.verdicts if line.startswith("positive control")]
        sections = sorted({line[1 : line.index("]")].split(":")[0] for line in self.verdicts if line.startswith("[")})
        if section not in sections:
            known = ", ".join([*sections, "positive control"])
            raise ExplorerError(f"no section '{section}' in these results; they have {known}")
        return [line for line in self.verdicts if line.startswith(f"[{section}")]

    def verdict(self) -> str:
        return "\n".join(self.verdicts)

    __str__ = verdict

    def to_dict(self) -> dict:
        """Every table as ``{"columns": [...], "data": [[...], ...]}`` (compact), with the verdicts."""

        def records(frame: pd.DataFrame) -> dict:
            table = json.loads(frame.to_json(orient="split", index=False, double_precision=6))
            return {"columns": table["columns"], "data": table["data"]}

        return {
            "model": self.model,
            "rule_layer": self.rule_layer,
            **dict(self.meta),
            "verdicts": list(self.verdicts),
            "context": records(self.context),
            "context_attempts": records(self.context_attempts),
            "escalation": records(self.escalation),
            "escalation_levels": records(self.escalation_levels),
        }

    def save(self, path: str | Path) -> Path:
        """Write the results as JSON (atomically)."""
        path = Path(path)
        cache.write_file_atomic(path, json.dumps(self.to_dict(), indent=0, ensure_ascii=False).encode())
        return path


def command_for(model_name: str, layers: str | None = None) -> str:
    """The command that regenerates a model's shipped control results."""
    scan = f" --layers {layers}" if layers else ""
    return f"explorer controls --model {model_name}{scan} --out explorer/data/controls/{PREFIX}{model_name}.json"


def escalation_levels(tests: Sequence[EscalationTest]) -> list[dict]:
    """Per emotion, template and level: the number and the z read-outs of danger prompt and twin."""
    return [
        {"emotion": test.emotion, "template": t.template, "level": i, "value": level.value,
         "danger_z": level.danger_z, "twin_z": level.twin_z, "difference": level.difference}
        for test in tests
        for t in test.templates
        for i, level in enumerate(t.levels)
    ]  # fmt: skip


def control_results(
    model: Model,
    vectors: EmotionVectors,
    context: ContextControl | None = None,
    escalation: Sequence[EscalationTest] | None = None,
    layers: Sequence[int] | str | int | None = "all",
) -> ControlResults:
    """Run both controls (or package results already computed): the context control at
    ``layers`` (default: every layer; it must include the rule layer) with the minimum detectable
    effect at the rule layer, and the escalation test of afraid and calm at the rule layer with
    every template."""
    vectors.check_model(model)
    scanned = model.resolve_layers(layers)
    if model.default_layer not in scanned:
        raise ExplorerError(f"layers {layers!r}: include the rule layer {model.default_layer}; every verdict uses it")
    if context is None:
        context = context_control(model, vectors, layers=scanned, mde=[model.default_layer])
    if escalation is None:
        escalation = escalation_tests(model, vectors)
    every = scanned == list(range(model.n_layers))
    meta = {
        "command": command_for(model.name, None if every else ",".join(map(str, scanned))),
        "explorer_version": __version__,
        "vectors_built": {k: vectors.metadata.get(k) for k in ("created", "corpus_sha256", "model_sha256")},
    }
    verdicts = [*context.verdicts(), *(f"[escalation] {t.verdict()}" for t in escalation)]
    return ControlResults(
        model=model.name,
        rule_layer=context.rule_layer,
        context=pd.DataFrame(context.rows()),
        context_attempts=pd.DataFrame(context.per_attempt()),
        escalation=pd.DataFrame([row for t in escalation for row in t.rows()]),
        escalation_levels=pd.DataFrame(escalation_levels(escalation)),
        verdicts=tuple(verdicts),
        meta=meta,
    )


def shipped_control_results() -> list[str]:
    """Models whose control results ship with the package (``explorer controls --out``)."""
    return sorted(p.stem[len(PREFIX) :] for p in CONTROLS_DIR.glob(f"{PREFIX}*.json"))


def load_control_results(model_name_or_path: str | Path) -> ControlResults:
    """The shipped control results of a model (or a file written by ``explorer controls --out``),
    read without loading the model."""
    path = Path(model_name_or_path)
    if path.suffix != ".json":
        path = CONTROLS_DIR / f"{PREFIX}{model_name_or_path}.json"
    if not path.is_file():
        raise ExplorerError(
            f"no control results at {path}; shipped for: {', '.join(shipped_control_results()) or 'none'} "
            f"(make them with `{command_for(str(model_name_or_path))}`)"
        )

    def table(block: dict) -> pd.DataFrame:
        return pd.DataFrame(block["data"], columns=block["columns"])

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return ControlResults(
            model=record["model"],
            rule_layer=int(record["rule_layer"]),
            context=table(record["context"]),
            context_attempts=table(record["context_attempts"]),
            escalation=table(record["escalation"]),
            escalation_levels=table(record["escalation_levels"]),
            verdicts=tuple(record["verdicts"]),
            meta={k: record[k] for k in ("command", "explorer_version", "vectors_built") if k in record},
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ExplorerError(f"{path}: not a file written by `explorer controls --out` ({error!r})") from None
