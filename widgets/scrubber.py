"""EpisodeScrubber: play through an episode token by token, transcript and chart in step."""

from __future__ import annotations

import bisect
import html
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd
import traitlets

from explorer.errors import ExplorerError
from explorer.tracing import IntensityTrace

from ._common import FAIL, PASS, clean, enable_offline_charts
from .export import scrubber_html
from .transcript import TranscriptView, trace_scale

CHART_WIDTH = 760
CHART_HEIGHT = 220
MAX_LINE_ROWS = 4500  # below Altair's 5000-row limit, leaving room for the small layers


class EpisodeScrubber(widgets.VBox):
    """Scrub through ``trace``: a token slider (with play and turn steps) drives a coloured
    transcript and a line chart of the chosen emotions' z-scores with a rule at the token.

    Args:
        trace: from :func:`explorer.trace`.
        emotions: emotions to offer (default: all traced); the first is selected.
        layer: layer to show first (default: the trace's default layer).
        scale: symmetric colour and axis limit in z (default: the 99th percentile of |z| over
            every token but the first, across the chosen emotions and all traced layers).
    """

    def __init__(
        self,
        trace: IntensityTrace,
        emotions: Sequence[str] | None = None,
        layer: int | None = None,
        scale: float | None = None,
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
        self.trace = trace
        self.emotions = emotions
        self.scale = float(scale if scale is not None else trace_scale(trace, emotions))
        self._columns = [trace.emotions.index(e) for e in emotions]
        self._token_message = trace.tokens["message_index"].to_numpy()
        first = trace.tokens.groupby("message_index")["token_index"].min()
        self._message_first = {int(m): int(t) for m, t in first.items()}
        self._starts = sorted(self._message_first.values())
        self._bands = self._attempt_bands()
        self._markers = self._outcome_markers()

        enable_offline_charts()
        self.transcript = TranscriptView.from_trace(trace, emotions, layer, scale=self.scale)
        self.play = widgets.Play(value=0, min=0, max=n - 1, step=1, interval=120, description="play")
        self.slider = widgets.IntSlider(
            value=0, min=0, max=n - 1, description="token", continuous_update=True, layout={"width": "420px"}
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
        self.where = widgets.HTML()
        # SVG: the rule is a DOM element, so a browser test can see it move; one path per line.
        self.chart = alt.JupyterChart(self._build_chart(layer, 0, emotions[0]), embed_options={"renderer": "svg"})

        # Python-side links so the kernel's state is always the displayed state (and testable).
        # jslink moves the highlight in the browser without a kernel round trip; the Python link
        # keeps the kernel-side state (and tests without a browser) in step.
        widgets.jslink((self.slider, "value"), (self.transcript, "position"))
        traitlets.link((self.slider, "value"), (self.transcript, "position"))
        traitlets.link((self.emotion_dropdown, "value"), (self.transcript, "emotion"))
        traitlets.link((self.layer_dropdown, "value"), (self.transcript, "layer"))
        self.slider.observe(self._on_position, "value")
        self.emotion_dropdown.observe(self._on_emotion, "value")
        self.layer_dropdown.observe(self._on_layer, "value")
        self._describe()

        name = html.escape(trace.episode.title or trace.episode.id)
        title = widgets.HTML(f"<b>{name}</b> · {html.escape(trace.model_name)} · {n} tokens")
        controls = widgets.HBox([self.play, self.slider, self.prev_button, self.next_button])
        pickers = widgets.HBox([self.emotion_dropdown, self.layer_dropdown, self.where])
        super().__init__(children=[title, controls, pickers, self.transcript, self.chart])

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

    def state(self) -> dict:
        """What is shown now, as plain values (for snapshot tests and notebooks)."""
        position = self.position
        row = self.trace.tokens.iloc[position]
        values = self.transcript.values[self.emotion][str(self.layer)]
        rule = self.chart.params.position
        return {
            "position": position,
            "token": str(row["token"]),
            "message_index": int(row["message_index"]),
            "role": str(row["role"]),
            "attempt": clean(row["attempt"]),
            "emotion": self.emotion,
            "layer": self.layer,
            "value": values[position],
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

    def _on_layer(self, change) -> None:
        # The chart holds one layer's lines (all layers would break the row budget), so a layer
        # change is the one event that rebuilds its data; the rule keeps its position.
        self.chart.chart = self._build_chart(change["new"], self.position, self.emotion)
        self._describe()

    def _describe(self) -> None:
        s = self.state()
        attempt = "" if s["attempt"] is None else f" · attempt {s['attempt']}"
        value = "–" if s["value"] is None else f"{s['value']:+.2f}"
        self.where.value = (
            f"message {s['message_index'] + 1}/{len(self.trace.episode.messages)} · {s['role']}{attempt}"
            f" · {html.escape(s['emotion'])} z = {value}"
        )

    # --- chart --------------------------------------------------------------------------------
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

    def line_data(self, layer: int) -> tuple[pd.DataFrame, int]:
        """Long-format z-scores of the chosen emotions at ``layer`` and the block size used.

        Long episodes are averaged over blocks of ``k`` tokens (x = the block's first token) so
        the chart stays under the row budget; averaging keeps a block's level, striding would not.
        """
        j = self.trace.layers.index(layer)
        values = self.trace.z[:, self._columns, j].astype(np.float64)
        n, e = values.shape
        k = max(1, math.ceil(n * e / MAX_LINE_ROWS))
        x = np.arange(0, n, k)
        if k > 1:
            padded = np.concatenate([values, np.full(((-n) % k, e), np.nan)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                values = np.nanmean(padded.reshape(-1, k, e), axis=1)
        frame = pd.DataFrame(
            {
                "token_index": np.repeat(x, e),
                "emotion": np.tile(self.emotions, len(x)),
                "z": np.round(values.reshape(-1), 3),
            }
        )
        return frame, k

    def _build_chart(self, layer: int, position: int, emotion: str) -> alt.LayerChart:
        n = len(self.trace.tokens)
        s = self.scale
        lines, k = self.line_data(layer)
        x_scale = alt.Scale(domain=[0, max(n - 1, 1)], nice=False, zero=False)
        position_param = alt.param(name="position", value=int(position))
        emotion_param = alt.param(name="emotion", value=emotion)
        selected = "datum.emotion === emotion"

        bands = (
            alt.Chart(self._bands)
            .mark_rect(clip=True)
            .encode(
                x=alt.X("start:Q", scale=x_scale, title="token", axis=alt.Axis(grid=False)),
                x2="end:Q",
                color=alt.Color("fill:N", scale=None, legend=None),
                tooltip=["attempt:Q", "start:Q", "end:Q"],
            )
        )
        band_labels = (
            alt.Chart(self._bands)
            .mark_text(align="left", baseline="bottom", dx=3, fontSize=10, color="#777", clip=True)
            .encode(x="start:Q", y=alt.value(CHART_HEIGHT - 2), text="label:N")
        )
        zero = alt.Chart(pd.DataFrame({"z": [0.0]})).mark_rule(color="#999", strokeDash=[2, 2]).encode(y="z:Q")
        line_layer = (
            alt.Chart(lines)
            .mark_line(clip=True)
            .encode(
                x=alt.X("token_index:Q", scale=x_scale, title="token", axis=alt.Axis(grid=False)),
                y=alt.Y(
                    "z:Q",
                    title=f"z at layer {layer}" + (f" (mean of {k} tokens)" if k > 1 else ""),
                    scale=alt.Scale(domain=[-s, s], clamp=True, nice=False),
                ),
                color=alt.Color(
                    "emotion:N",
                    scale=alt.Scale(domain=self.emotions),
                    legend=alt.Legend(orient="top", title=None),
                ),
                strokeWidth=alt.condition(selected, alt.value(2.4), alt.value(1.0)),
                opacity=alt.condition(selected, alt.value(1.0), alt.value(0.4)),
                tooltip=["token_index:Q", "emotion:N", alt.Tooltip("z:Q", format="+.2f")],
            )
        )
        markers = (
            alt.Chart(self._markers)
            .mark_point(shape="triangle-down", size=90, filled=True, clip=True)
            .encode(
                x="token_index:Q",
                y=alt.value(7),
                color=alt.Color(
                    "outcome:N",
                    scale=alt.Scale(domain=["fail", "pass"], range=[FAIL, PASS]),
                    legend=alt.Legend(orient="top", title="feedback"),
                ),
                tooltip=["outcome:N", "attempt:Q", "message:Q", "token_index:Q"],
            )
        )
        rule = (
            alt.Chart(pd.DataFrame({"row": [0]}))
            .transform_calculate(rule_x="position")
            .mark_rule(color="#111", strokeWidth=1.5)
            .encode(x="rule_x:Q")
        )
        return (
            alt.layer(bands, band_labels, zero, line_layer, markers, rule)
            .add_params(position_param, emotion_param)
            .resolve_scale(color="independent")
            .properties(width=CHART_WIDTH, height=CHART_HEIGHT)
        )

    # --- files --------------------------------------------------------------------------------
    def save_html(self, path: str | Path) -> Path:
        """A standalone page (no kernel, no network): transcript, controls and the chart as SVG."""
        path = Path(path)
        path.write_text(scrubber_html(self), encoding="utf-8")
        return path

    def to_csv(self, path: str | Path) -> Path:
        """The token table with every emotion's z at the shown layer (``trace.readouts(layer)``)."""
        path = Path(path)
        self.trace.to_csv(path, layer=self.layer)
        return path
