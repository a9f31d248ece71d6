"""EpisodeScrubber: play through an episode token by token, transcript and trend charts in step."""

from __future__ import annotations

import bisect
import copy
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd
import traitlets
from altair.vegalite.v6.schema.core import TopLevelSpec

from explorer.comparison import paired_attempt_means
from explorer.errors import ExplorerError
from explorer.tracing import IntensityTrace

from ._common import FAIL, PASS, axis_limit, clean, enable_offline_charts, rounded
from .export import scrubber_html
from .transcript import TranscriptView, trace_scale

CHART_WIDTH = 760
CHART_HEIGHT = 200
TURN_HEIGHT = 130
MAX_LINE_ROWS = 4500  # rows of line data (one per token, or per block of tokens): keeps the browser's windows quick
# Rolling-mean windows offered in the chart's menu, in tokens (1: no smoothing). Each is one window
# transform in the chart, computed once in the browser; the menu only picks which one is drawn.
SMOOTHING = (1, 8, 16, 32, 64, 96, 128, 192, 256)
ROLE_COLOURS = {"system": "#7f7f7f", "user": "#9467bd", "tool": "#8c564b", "assistant": "#17becf"}
DIFFERENCE_COLOUR = "#111111"
DIFFERENCE_LABEL = "episode − control (same assistant words)"


def default_smoothing(trace: IntensityTrace) -> int:
    """The offered window closest to (not above) the episode's median message length, kept within
    16–128 tokens: about one turn, so a turn's level shows while token noise averages out.

    Measured with the shipped smollm2-135m vectors (read-out layer, *desperate*, content tokens):
    the correlation of the smoothed line with the per-turn means is, for impossible-code (median
    turn 198 tokens), 0.16 unsmoothed, 0.70 at 64, 0.83 at 128, 0.85 at 192; for
    stranded-traveller (median 64), 0.38, 0.87 at 64, 0.75 at 128. Windows much longer than a turn
    blur neighbouring turns together; shorter ones leave the token noise.
    """
    median = float(trace.tokens.groupby("message_index").size().median())
    return max(n for n in SMOOTHING if n <= max(16.0, min(128.0, median)))


def window_frame(tokens: int, block: int) -> tuple[int, int]:
    """The centred frame (rows before, rows after) of a rolling mean over ``tokens`` tokens when
    each row averages ``block`` tokens: the chart's Vega-Lite window transform uses the same."""
    rows = max(1, round(tokens / block))
    return rows // 2, rows - 1 - rows // 2


def rolling_mean(values: np.ndarray, before: int, after: int) -> np.ndarray:
    """Mean of rows i - before … i + after of ``values`` (1-D) that are not NaN; NaN where none is.
    The Python mirror of the chart's window transform (Vega's mean skips null)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    valid = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(valid, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    index = np.arange(n)
    lo, hi = np.clip(index - before, 0, n), np.clip(index + after + 1, 0, n)
    count = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[hi] - sums[lo]) / np.maximum(count, 1), np.nan)


def block_means(values: np.ndarray, keep: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of ``values`` (tokens, k) over consecutive blocks of ``block`` tokens: over the tokens
    where ``keep`` is True (NaN for a block with none) and over all tokens."""
    n, k = values.shape
    pad = (-n) % block
    padded = np.concatenate([values, np.full((pad, k), np.nan)]).reshape(-1, block, k)
    kept = np.concatenate([keep, np.zeros(pad, dtype=bool)]).reshape(-1, block, 1)
    present = np.concatenate([np.ones(n, dtype=bool), np.zeros(pad, dtype=bool)]).reshape(-1, block, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        content = np.where(kept, padded, 0.0).sum(1) / kept.sum(1)
        everything = np.where(present, padded, 0.0).sum(1) / present.sum(1)
    return content, everything


def _records(frame: pd.DataFrame) -> list[dict]:
    """A table as JSON rows (NaN and NA as null)."""
    return json.loads(frame.to_json(orient="records"))


class BuiltSpec(TopLevelSpec):
    """A Vega-Lite spec written as JSON, in the wrapper ``alt.JupyterChart`` takes: it hands the spec
    over as it is, without Altair's copying and schema validation on every build."""

    def __init__(self, spec: dict):
        super().__init__(spec)

    @property
    def params(self) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(name=p["name"], value=p.get("value"), select=alt.Undefined) for p in self._args[0]["params"]
        ]

    def to_dict(self, *args, **kwargs) -> dict:
        return copy.deepcopy(self._args[0])


class EpisodeScrubber(widgets.VBox):
    """Scrub through ``trace``: a token slider (with play and turn steps) drives a coloured
    transcript and two charts that show the trend across the episode at a glance.

    - The trend chart: each chosen emotion's z-score as a rolling mean over the tokens picked in
      its *smoothing* menu (default: about one turn, see :func:`default_smoothing`; 1 = every
      token). The mean is a window transform in the chart, so changing it redraws in the browser
      with no call to the kernel, in a notebook and in the page :meth:`save_html` writes. The
      y axis spans ± the 99th percentile of the drawn lines' |z| (:meth:`axis_limits`).
    - The turn panel: the selected emotion's mean z per message with its 95% interval
      (:meth:`IntensityTrace.turn_means`), coloured by role; the turn under the slider is
      highlighted. With a ``control``, a dashed line adds, per attempt, the episode's mean minus
      the control's on the same assistant words (:func:`explorer.comparison.paired_attempt_means`,
      the numbers :func:`explorer.compare` tests).
    - *include template tokens*: by default the first token (an attention sink, often hundreds
      of z) and chat-template tokens are left out of every number, colour and axis limit; the box
      puts them back.

    Args:
        trace: from :func:`explorer.trace`.
        emotions: emotions to offer (default: all traced); the first is selected.
        layer: layer to show first (default: the trace's default layer).
        scale: symmetric colour limit of the transcript in z (default: the 99th percentile of |z|
            over the content tokens, across the chosen emotions and all traced layers).
        control: a trace of the episode's matched control (same model) for the difference line.
        smooth: the rolling-mean window shown first, one of :data:`SMOOTHING` (default: see above).
        include_template: start with template tokens and the sink included.
    """

    def __init__(
        self,
        trace: IntensityTrace,
        emotions: Sequence[str] | None = None,
        layer: int | None = None,
        scale: float | None = None,
        control: IntensityTrace | None = None,
        smooth: int | None = None,
        include_template: bool = False,
    ):
        emotions = list(trace.emotions if emotions is None else emotions)
        unknown = [e for e in emotions if e not in trace.emotions]
        if not emotions or unknown:
            raise ExplorerError(
                f"emotion '{unknown[0] if unknown else ''}' was not traced; this trace has: {', '.join(trace.emotions)}"
            )
        layer = trace.default_layer if layer is None else int(layer)
        if layer not in trace.layers:
            raise ExplorerError(f"layer {layer} was not traced; this trace has layers {trace.layers}")
        n = len(trace.tokens)
        if n == 0:
            raise ExplorerError(f"trace of '{trace.episode.id}' has no tokens")
        if control is not None and not isinstance(control, IntensityTrace):
            raise ExplorerError(
                f"control is a {type(control).__name__}; pass ex.trace(model, control_episode, vectors)"
            )
        if control is not None and control.model_name != trace.model_name:
            raise ExplorerError(
                f"control was traced with '{control.model_name}', the episode with '{trace.model_name}'; use one model"
            )
        smooth = default_smoothing(trace) if smooth is None else smooth
        if smooth not in SMOOTHING:
            raise ExplorerError(f"smooth={smooth!r}; choose one of {', '.join(map(str, SMOOTHING))} tokens")
        self.trace = trace
        self.control = control
        self.emotions = emotions
        self.content = trace.content_mask()
        self.scale = float(scale if scale is not None else trace_scale(trace, emotions))
        self.scale_all = float(scale if scale is not None else trace_scale(trace, emotions, include_template=True))
        self._columns = [trace.emotions.index(e) for e in emotions]
        self._token_message = trace.tokens["message_index"].to_numpy()
        first = trace.tokens.groupby("message_index")["token_index"].min()
        self._message_first = {int(m): int(t) for m, t in first.items()}
        self._starts = sorted(self._message_first.values())
        self._bands = self._attempt_bands()
        self._markers = self._outcome_markers()
        self._turns: dict[int, pd.DataFrame] = {}
        # open on the first token that carries text, never on the attention sink
        start = int(np.argmax(self.content)) if self.content.any() else 0

        enable_offline_charts()
        self.transcript = TranscriptView.from_trace(
            trace, emotions, layer, scale=self.scale, position=start, scale_all=self.scale_all
        )
        self.transcript.include_template = bool(include_template)
        self.play = widgets.Play(value=start, min=0, max=n - 1, step=1, interval=120, description="play")
        self.slider = widgets.IntSlider(
            value=start, min=0, max=n - 1, description="token", continuous_update=True, layout={"width": "420px"}
        )
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.prev_button = widgets.Button(description="◀ turn", tooltip="first token of the previous message")
        self.next_button = widgets.Button(description="turn ▶", tooltip="first token of the next message")
        for button in (self.prev_button, self.next_button):
            button.layout.width = "80px"
        self.prev_button.on_click(lambda _: self.step(-1))
        self.next_button.on_click(lambda _: self.step(1))
        self.emotion_dropdown = widgets.Dropdown(options=emotions, value=emotions[0], description="emotion")
        self.layer_dropdown = widgets.Dropdown(options=list(trace.layers), value=layer, description="layer")
        self.include_box = widgets.Checkbox(
            value=bool(include_template),
            description="include template tokens",
            tooltip="the first token (attention sink) and chat-template tokens: left out of numbers, colours and axes",
            indent=False,
            layout={"width": "200px"},
        )
        self.where = widgets.HTML()
        # SVG: the rule is a DOM element, so a browser test can see it move; one path per line.
        self.chart = alt.JupyterChart(
            self._build_chart(layer, start, emotions[0], bool(include_template), smooth),
            embed_options={"renderer": "svg", "actions": False},
        )

        # Python-side links so the kernel's state is always the displayed state (and testable).
        # jslink moves the highlight in the browser without a kernel round trip; the Python link
        # keeps the kernel-side state (and tests without a browser) in step.
        widgets.jslink((self.slider, "value"), (self.transcript, "position"))
        traitlets.link((self.slider, "value"), (self.transcript, "position"))
        traitlets.link((self.emotion_dropdown, "value"), (self.transcript, "emotion"))
        traitlets.link((self.layer_dropdown, "value"), (self.transcript, "layer"))
        widgets.jslink((self.include_box, "value"), (self.transcript, "include_template"))
        traitlets.link((self.include_box, "value"), (self.transcript, "include_template"))
        self.slider.observe(self._on_position, "value")
        self.emotion_dropdown.observe(self._on_emotion, "value")
        self.layer_dropdown.observe(self._on_layer, "value")
        self.include_box.observe(self._on_include, "value")
        self._describe()

        name = html.escape(trace.episode.title or trace.episode.id)
        versus = "" if control is None else f" · control: {html.escape(control.episode.id)}"
        title = widgets.HTML(f"<b>{name}</b> · {html.escape(trace.model_name)} · {n} tokens{versus}")
        controls = widgets.HBox([self.play, self.slider, self.prev_button, self.next_button])
        pickers = widgets.HBox([self.emotion_dropdown, self.layer_dropdown, self.include_box])
        # the charts come before the transcript: the trend is the first thing on screen
        super().__init__(children=[title, controls, pickers, self.where, self.chart, self.transcript])

    # --- state ------------------------------------------------------------------------------
    @property
    def position(self) -> int:
        return int(self.slider.value)

    @property
    def emotion(self) -> str:
        return str(self.emotion_dropdown.value)

    @property
    def layer(self) -> int:
        return int(self.layer_dropdown.value)

    @property
    def include_template(self) -> bool:
        return bool(self.include_box.value)

    @property
    def smooth(self) -> int:
        """The rolling-mean window drawn now, in tokens (the chart's menu; synced from the browser)."""
        return int(self.chart.params.smooth)

    def state(self) -> dict:
        """What is shown now, as plain values (for snapshot tests and notebooks). ``value`` is None
        on a template token or the sink unless they are included."""
        position = self.position
        row = self.trace.tokens.iloc[position]
        excluded = not (self.include_template or self.content[position])
        values = self.transcript.values[self.emotion][str(self.layer)]
        turn = self.turn_data(self.layer)
        turn = turn[
            (turn["emotion"] == self.emotion)
            & (turn["included"] == int(self.include_template))
            & (turn["message"] == int(row["message_index"]))
        ]
        rule = self.chart.params.position
        return {
            "position": position,
            "token": str(row["token"]),
            "message_index": int(row["message_index"]),
            "role": str(row["role"]),
            "attempt": clean(row["attempt"]),
            "emotion": self.emotion,
            "layer": self.layer,
            "value": None if excluded else values[position],
            "turn_mean": clean(turn["mean"].iloc[0]) if len(turn) else None,
            "smooth": self.smooth,
            "include_template": self.include_template,
            "rule_position": None if rule is None else int(round(rule)),
        }

    def step(self, direction: int) -> None:
        """Jump to the first token of the previous (``direction`` < 0) or next message."""
        first = self._message_first[int(self._token_message[self.position])]
        if direction < 0:
            i = bisect.bisect_left(self._starts, first) - 1
        else:
            i = bisect.bisect_right(self._starts, first)
        if 0 <= i < len(self._starts):
            self.slider.value = self._starts[i]

    # --- reactions: cheap traitlet updates only; the data is already in the browser ------------
    def _on_position(self, change) -> None:
        self.chart.params.position = change["new"]
        self._describe()

    def _on_emotion(self, change) -> None:
        self.chart.params.emotion = change["new"]
        self._describe()

    def _on_include(self, change) -> None:
        self.chart.params.include = bool(change["new"])
        self._describe()

    def _on_layer(self, change) -> None:
        # The chart holds one layer's lines (all layers would break the row budget), so a layer
        # change is the one event that rebuilds its data; rule, emotion, smoothing and the toggle
        # keep their values.
        self.chart.chart = self._build_chart(
            change["new"], self.position, self.emotion, self.include_template, self.smooth
        )
        self._describe()

    def _describe(self) -> None:
        s = self.state()
        attempt = "" if s["attempt"] is None else f" · attempt {s['attempt']}"
        if s["value"] is None and not s["include_template"]:
            value = "– (template token, left out)"
        else:
            value = "–" if s["value"] is None else f"{s['value']:+.2f}"
        turn = "" if s["turn_mean"] is None else f" · turn mean {s['turn_mean']:+.2f}"
        self.where.value = (
            f"token {s['position']} · message {s['message_index'] + 1}/{len(self.trace.episode.messages)}"
            f" · {s['role']}{attempt} · {html.escape(s['emotion'])} z = {value}{turn}"
        )

    # --- data ---------------------------------------------------------------------------------
    def _attempt_bands(self) -> pd.DataFrame:
        tokens = self.trace.tokens[self.trace.tokens["attempt"].notna()]
        spans = tokens.groupby(tokens["attempt"].astype(int))["token_index"].agg(["min", "max"])
        return pd.DataFrame(
            {
                "attempt": spans.index.astype(int),
                "start": spans["min"].to_numpy(),
                "end": spans["max"].to_numpy() + 1,
                "label": [f"attempt {a}" for a in spans.index],
                "fill": ["#efefef" if i % 2 == 0 else "#dedede" for i in range(len(spans))],
            }
        )

    def _outcome_markers(self) -> pd.DataFrame:
        rows = [
            {"token_index": self._message_first[i], "outcome": m.outcome, "attempt": m.attempt, "message": i}
            for i, m in enumerate(self.trace.episode.messages)
            if m.outcome is not None and i in self._message_first
        ]
        return pd.DataFrame(rows, columns=["token_index", "outcome", "attempt", "message"])

    def block_size(self) -> int:
        """Tokens per row of the line data: 1 unless the episode has more tokens than the row budget."""
        return max(1, math.ceil(len(self.trace.tokens) / MAX_LINE_ROWS))

    def line_values(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, content, everything): per row (a token, or a block of ``block_size()`` tokens from x),
        each chosen emotion's z at ``layer`` over the content tokens (NaN on template tokens) and
        over all tokens; rounded to 3 decimals as they are sent to the browser."""
        j = self.trace.layers.index(layer)
        values = self.trace.z[:, self._columns, j].astype(np.float64)
        k = self.block_size()
        content, everything = block_means(values, self.content, k)
        x = np.arange(0, len(values), k)
        return x, np.round(content, 3), np.round(everything, 3)

    def line_data(self, layer: int) -> tuple[pd.DataFrame, int]:
        """Long format of :meth:`line_values`: one row per token (or block) and emotion with ``z``
        (content tokens only; NaN on template tokens) and ``z_all``, and the block size."""
        x, content, everything = self.line_values(layer)
        frame = pd.DataFrame(
            {
                "token_index": np.repeat(x, len(self.emotions)),
                "emotion": np.tile(self.emotions, len(x)),
                "z": content.reshape(-1),
                "z_all": everything.reshape(-1),
            }
        )
        return frame, self.block_size()

    def line_rows(self, layer: int) -> list[dict]:
        """The chart's line data: one row per token (or block), ``e<i>`` = [content z, all-token z]
        of emotion i, which the chart folds into one line per emotion."""
        x, content, everything = self.line_values(layer)
        pairs = [list(zip(rounded(content[:, i]), rounded(everything[:, i]))) for i in range(len(self.emotions))]
        return [
            {"token_index": int(t), **{f"e{i}": list(pairs[i][r]) for i in range(len(self.emotions))}}
            for r, t in enumerate(x)
        ]

    def smoothed(self, layer: int, tokens: int, include_template: bool = False) -> np.ndarray:
        """(rows, emotions): what the chart draws for a window of ``tokens`` (the Python mirror of
        its window transform, used for the axis limits and by the tests)."""
        _, content, everything = self.line_values(layer)
        values = everything if include_template else content
        before, after = window_frame(tokens, self.block_size())
        return np.stack([rolling_mean(values[:, i], before, after) for i in range(values.shape[1])], axis=1)

    def axis_limits(self, layer: int) -> dict[int, tuple[float, float]]:
        """Per window: the y limit without and with template tokens (99th percentile of |line|)."""
        return {
            n: (axis_limit(self.smoothed(layer, n, False)), axis_limit(self.smoothed(layer, n, True)))
            for n in SMOOTHING
        }

    def turn_data(self, layer: int) -> pd.DataFrame:
        """Per chosen emotion, with and without template tokens (``included``) and per message:
        :meth:`IntensityTrace.turn_means` as the turn panel draws it."""
        if layer not in self._turns:
            frames = []
            for emotion in self.emotions:
                for included in (False, True):
                    table = self.trace.turn_means(emotion, layer, include_template=included).reset_index()
                    table.insert(0, "emotion", emotion)
                    table.insert(1, "included", int(included))
                    frames.append(table)
            data = pd.concat(frames, ignore_index=True).rename(columns={"message_index": "message"})
            data = data[data["n"] > 0].reset_index(drop=True)
            data["attempt"] = [clean(a) for a in data["attempt"]]
            for column in ("mean", "ci_low", "ci_high"):
                data[column] = rounded(data[column].to_numpy(), 4)
            self._turns[layer] = data
        return self._turns[layer]

    def difference_data(self, layer: int) -> pd.DataFrame:
        """Per chosen emotion and attempt: episode minus control on the same assistant words
        (:func:`explorer.comparison.paired_attempt_means`), at the centre of the episode's
        assistant tokens of that attempt. Empty without a control or at a layer it lacks."""
        columns = ["emotion", "attempt", "token_index", "difference", "episode", "control"]
        if self.control is None or layer not in self.control.layers:
            return pd.DataFrame(columns=columns)
        tokens = self.trace.tokens
        assistant = tokens[(tokens["role"] == "assistant") & tokens["attempt"].notna()]
        spans = assistant.groupby(assistant["attempt"].astype(int))["token_index"].agg(["min", "max"])
        rows = []
        for emotion in self.emotions:
            if emotion not in self.control.emotions:
                continue
            for pair in paired_attempt_means(self.trace, self.control, emotion, layer):
                if pair.difference is None or pair.attempt not in spans.index:
                    continue
                lo, hi = spans.loc[pair.attempt]
                rows.append(
                    {
                        "emotion": emotion,
                        "attempt": pair.attempt,
                        "token_index": round((int(lo) + int(hi) + 1) / 2, 1),
                        "difference": round(pair.difference, 4),
                        "episode": pair.episode_assistant,
                        "control": pair.control_assistant,
                    }
                )
        return pd.DataFrame(rows, columns=columns)

    # --- chart --------------------------------------------------------------------------------
    def _build_chart(self, layer: int, position: int, emotion: str, include: bool, smooth: int) -> BuiltSpec:
        """The two charts as one Vega-Lite spec, written as JSON: composed through Altair's chart
        objects, which copy the whole spec at every layer and concat, it took seconds to build."""
        n = len(self.trace.tokens)
        k = self.block_size()
        x_scale = {"domain": [0, max(n - 1, 1)], "nice": False, "zero": False}
        selected = "datum.emotion === emotion"
        current_turn = "datum.start <= position && position < datum.end"
        options = json.dumps(list(SMOOTHING))
        limits = self.axis_limits(layer)
        limit = f"{json.dumps([list(limits[w]) for w in SMOOTHING])}[indexof({options}, smooth)][include ? 1 : 0]"

        def x(field: str, title: str | None = None) -> dict:
            return {"field": field, "type": "quantitative", "scale": x_scale, "title": title, "axis": {"grid": False}}

        def q(field: str, **more) -> dict:
            return {"field": field, "type": "quantitative", **more}

        def signed(field: str, title: str | None = None) -> dict:
            return q(field, format="+.3f", **({"title": title} if title else {}))

        bands = {
            "data": {"name": "bands"},
            "mark": {"type": "rect", "clip": True},
            "encoding": {
                "x": x("start"),
                "x2": {"field": "end"},
                "color": {"field": "fill", "type": "nominal", "scale": None, "legend": None},
                "tooltip": [q("attempt"), q("start"), q("end")],
            },
        }
        band_labels = {
            "data": {"name": "bands"},
            "mark": {"type": "text", "align": "left", "baseline": "bottom", "dx": 3, "fontSize": 10,
                     "color": "#777", "clip": True},
            "encoding": {"x": q("start"), "y": {"value": CHART_HEIGHT - 2}, "text": {"field": "label"}},
        }  # fmt: skip
        zero = {"data": {"values": [{"z": 0}]}, "mark": {"type": "rule", "color": "#999", "strokeDash": [2, 2]},
                "encoding": {"y": q("z")}}  # fmt: skip
        rule = {
            "data": {"values": [{}]},
            "transform": [{"calculate": "position", "as": "rule_x"}],
            "mark": {"type": "rule", "color": "#111", "strokeWidth": 1.5},
            "encoding": {"x": x("rule_x")},
        }

        # The lines: fold the per-emotion pairs, pick content-only or all tokens, then one centred
        # window transform per offered width; the menu's param picks the field that is drawn.
        transform = [
            {"fold": [f"e{i}" for i in range(len(self.emotions))], "as": ["series", "pair"]},
            {"calculate": f"{json.dumps(self.emotions)}[toNumber(slice(datum.series, 1))]", "as": "emotion"},
            {"calculate": "include ? datum.pair[1] : datum.pair[0]", "as": "z"},
        ]
        fields = []
        for width in SMOOTHING:
            if width == 1:
                fields.append("datum.z")
                continue
            before, after = window_frame(width, k)
            transform.append(
                {
                    "window": [{"op": "mean", "field": "z", "as": f"s{width}"}],
                    "frame": [-before, after],
                    "groupby": ["emotion"],
                    "sort": [{"field": "token_index"}],
                }
            )
            fields.append(f"datum.s{width}")
        transform.append({"calculate": f"[{', '.join(fields)}][indexof({options}, smooth)]", "as": "shown"})
        block = f", blocks of {k} tokens" if k > 1 else ""
        lines = {
            "data": {"name": "lines"},
            "transform": transform,
            "mark": {"type": "line", "clip": True},
            "encoding": {
                "x": x("token_index"),
                "y": q(
                    "shown",
                    title=f"z at layer {layer}{block}",
                    scale={"domain": {"expr": f"[-{limit}, {limit}]"}, "clamp": True, "nice": False},
                ),
                "color": {"field": "emotion", "type": "nominal", "scale": {"domain": self.emotions},
                          "legend": {"orient": "top", "title": None}},
                "strokeWidth": {"condition": {"test": selected, "value": 2.4}, "value": 1.0},
                "opacity": {"condition": {"test": selected, "value": 1.0}, "value": 0.45},
                "tooltip": [q("token_index"), {"field": "emotion", "type": "nominal"},
                            q("shown", title="z (smoothed)", format="+.2f")],
            },
        }  # fmt: skip
        markers = {
            "data": {"name": "markers"},
            "mark": {"type": "point", "shape": "triangle-down", "size": 90, "filled": True, "clip": True},
            "encoding": {
                "x": q("token_index"),
                "y": {"value": 7},
                "color": {"field": "outcome", "type": "nominal", "scale": {"domain": ["fail", "pass"],
                          "range": [FAIL, PASS]}, "legend": {"orient": "top", "title": "feedback"}},
                "tooltip": [{"field": "outcome", "type": "nominal"}, q("attempt"), q("message"), q("token_index")],
            },
        }  # fmt: skip
        caption = (
            "(smooth === 1 ? 'z per token' : 'z, rolling mean over ' + smooth + ' tokens')"
            " + (include ? ' · template tokens and first token included'"
            " : ' · template tokens and first token (attention sink) left out')"
        )
        trend = {
            "title": {"text": {"expr": caption}, "anchor": "start", "fontSize": 12, "fontWeight": "normal",
                      "color": "#333"},
            "width": CHART_WIDTH,
            "height": CHART_HEIGHT,
            "layer": [bands, band_labels, zero, lines, markers, rule],
            "resolve": {"scale": {"color": "independent"}},
        }  # fmt: skip

        # The turn panel: one box per message (its 95% interval) with a bar at its mean.
        roles = [r for r in ROLE_COLOURS if r in set(self.trace.tokens["role"])]
        role_colour = {
            "field": "role",
            "type": "nominal",
            "scale": {"domain": roles, "range": [ROLE_COLOURS[r] for r in roles]},
            "legend": {"orient": "top", "title": "turn mean ± 95% CI"},
        }
        turn_tooltip = [q("message"), {"field": "role", "type": "nominal"}, q("attempt"), q("n", title="tokens"),
                        signed("mean"), signed("ci_low"), signed("ci_high")]  # fmt: skip
        shown_turns = [{"filter": f"{selected} && datum.included === (include ? 1 : 0)"}]
        intervals = {
            "data": {"name": "turns"},
            "transform": shown_turns,
            "mark": {"type": "rect", "clip": True},
            "encoding": {
                "x": x("start", "token"),
                "x2": {"field": "end"},
                "y": q("ci_low", title=f"turn mean z · layer {layer}", scale={"zero": True, "nice": True}),
                "y2": {"field": "ci_high"},
                "color": role_colour,
                "opacity": {"condition": {"test": current_turn, "value": 0.9}, "value": 0.35},
                "stroke": {"condition": {"test": current_turn, "value": "#111"}, "value": None},
                "tooltip": turn_tooltip,
            },
        }
        means = {
            "data": {"name": "turns"},
            "transform": shown_turns,
            "mark": {"type": "rule", "clip": True},
            "encoding": {
                "x": q("start"),
                "x2": {"field": "end"},
                "y": q("mean"),
                "color": {**role_colour, "legend": None},
                "strokeWidth": {"condition": {"test": current_turn, "value": 3.5}, "value": 2.0},
                "tooltip": turn_tooltip,
            },
        }
        panel = [bands, zero, intervals, means]
        datasets = {
            "lines": self.line_rows(layer),
            "bands": _records(self._bands),
            "markers": _records(self._markers),
            "turns": _records(self.turn_data(layer)),
        }
        differences = self.difference_data(layer)
        if len(differences):
            datasets["differences"] = _records(differences)
            panel.append(
                {
                    "data": {"name": "differences"},
                    "transform": [{"filter": selected}, {"calculate": f"'{DIFFERENCE_LABEL}'", "as": "series"}],
                    "mark": {"type": "line", "point": True, "strokeDash": [5, 3], "clip": True},
                    "encoding": {
                        "x": q("token_index"),
                        "y": q("difference"),
                        "color": {"field": "series", "type": "nominal", "scale": {"range": [DIFFERENCE_COLOUR]},
                                  "legend": {"orient": "top", "title": None, "labelLimit": 400,
                                             "symbolType": "stroke", "symbolDash": [5, 3]}},
                        "tooltip": [q("attempt"), signed("difference"), signed("episode"), signed("control")],
                    },
                }
            )  # fmt: skip
        panel.append(rule)
        smooth_menu = {
            "input": "select",
            "options": list(SMOOTHING),
            "labels": ["off (every token)" if w == 1 else f"{w} tokens" for w in SMOOTHING],
            "name": "smoothing (rolling mean) ",
        }
        return BuiltSpec(
            {
                "$schema": alt.SCHEMA_URL,
                "config": {"view": {"stroke": "#ddd"}},
                "params": [
                    {"name": "position", "value": int(position)},
                    {"name": "emotion", "value": emotion},
                    {"name": "include", "value": int(include)},  # 0/1: the widget syncs numbers
                    {"name": "smooth", "value": int(smooth), "bind": smooth_menu},
                ],
                "vconcat": [
                    trend,
                    {
                        "width": CHART_WIDTH,
                        "height": TURN_HEIGHT,
                        "layer": panel,
                        "resolve": {"scale": {"color": "independent"}},
                    },
                ],  # fmt: skip
                "spacing": 6,
                "resolve": {"scale": {"color": "independent"}},
                "datasets": datasets,
            }
        )

    # --- files --------------------------------------------------------------------------------
    def save_html(self, path: str | Path) -> Path:
        """A standalone page (no kernel, no network): transcript, controls and the live charts,
        smoothing menu and template toggle included."""
        path = Path(path)
        path.write_text(scrubber_html(self), encoding="utf-8")
        return path

    def to_csv(self, path: str | Path) -> Path:
        """The token table with every emotion's z at the shown layer (``trace.readouts(layer)``)."""
        path = Path(path)
        self.trace.to_csv(path, layer=self.layer)
        return path
