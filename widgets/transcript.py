"""The token-coloured transcript: an anywidget whose front end is transcript.js + transcript.css."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anywidget
import traitlets

from explorer.tracing import IntensityTrace

from ._common import axis_limit, clean, rounded

HERE = Path(__file__).parent
JS_PATH = HERE / "transcript.js"
CSS_PATH = HERE / "transcript.css"


def transcript_data(trace: IntensityTrace, emotions: Sequence[str]) -> dict:
    """Everything the front end needs, computed once: tokens, messages and every value.

    ``values[emotion][str(layer)]`` is the list of per-token z-scores (3 decimals) so that the
    browser can recolour for any emotion or layer without asking the kernel.
    """
    table = trace.tokens
    tokens = [
        {
            "text": str(text),
            "message_index": int(message),
            "role": str(role),
            "attempt": clean(attempt),
            "in_content": bool(content),
        }
        for text, message, role, attempt, content in zip(
            table["token"], table["message_index"], table["role"], table["attempt"], trace.content_mask()
        )
    ]
    starts = table.groupby("message_index")["token_index"].min()
    messages = [
        {
            "index": i,
            "role": m.role,
            "attempt": m.attempt,
            "outcome": m.outcome,
            "first_token": int(starts[i]) if i in starts.index else None,
        }
        for i, m in enumerate(trace.episode.messages)
    ]
    values = {
        emotion: {str(layer): rounded(trace.emotion(emotion, layer)) for layer in trace.layers} for emotion in emotions
    }
    return {"tokens": tokens, "messages": messages, "values": values}


def trace_scale(trace: IntensityTrace, emotions: Sequence[str], include_template: bool = False) -> float:
    """One colour limit for all shown emotions and layers, so equal colours mean equal z: the 99th
    percentile of |z| over the content tokens (:meth:`IntensityTrace.content_mask`), or over every
    token, the attention sink included, with ``include_template``."""
    index = [trace.emotions.index(e) for e in emotions]
    keep = slice(None) if include_template else trace.content_mask()
    return axis_limit(trace.z[keep][:, index, :])


class TranscriptView(anywidget.AnyWidget):
    """Chat bubbles with one coloured span per token; hover for read-outs, click to seek.

    Data traitlets (``tokens``, ``messages``, ``values``, ``emotions``) are sent once; the state
    traitlets (``emotion``, ``layer``, ``position``, ``scale``, ``include_template``) are all a
    change sends. Template tokens and the first token (an attention sink) stay uncoloured unless
    ``include_template``, which also switches the colour limit from ``scale`` to ``scale_all``.
    """

    _esm = JS_PATH
    _css = CSS_PATH

    tokens = traitlets.List(traitlets.Dict()).tag(sync=True)
    messages = traitlets.List(traitlets.Dict()).tag(sync=True)
    values = traitlets.Dict().tag(sync=True)
    emotions = traitlets.List(traitlets.Unicode()).tag(sync=True)
    emotion = traitlets.Unicode("").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    position = traitlets.Int(0).tag(sync=True)
    scale = traitlets.Float(1.0).tag(sync=True)
    scale_all = traitlets.Float(1.0).tag(sync=True)
    include_template = traitlets.Bool(False).tag(sync=True)

    @classmethod
    def from_trace(
        cls,
        trace: IntensityTrace,
        emotions: Sequence[str],
        layer: int,
        scale: float | None = None,
        position: int = 0,
        scale_all: float | None = None,
    ) -> TranscriptView:
        """A transcript of ``trace`` for ``emotions`` (the first one selected) at ``layer``; the
        colour limits default to :func:`trace_scale` without and with template tokens."""
        data = transcript_data(trace, emotions)
        if scale_all is None:
            scale_all = scale if scale is not None else trace_scale(trace, emotions, include_template=True)
        return cls(
            **data,
            emotions=list(emotions),
            emotion=emotions[0],
            layer=int(layer),
            position=int(position),
            scale=float(scale if scale is not None else trace_scale(trace, emotions)),
            scale_all=float(scale_all),
        )
