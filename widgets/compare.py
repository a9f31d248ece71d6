"""CompareView: an episode against its matched control, attempt by attempt."""

from __future__ import annotations

import html

import altair as alt
import ipywidgets as widgets
import pandas as pd

from explorer.comparison import Comparison, paired_attempt_means
from explorer.errors import ExplorerError
from explorer.tracing import IntensityTrace

from ._common import enable_offline_charts

SERIES_COLOURS = ["#1f77b4", "#ff7f0e", "#555555"]


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def stats_rows(stats: Comparison, layer: int | None = None) -> list[tuple[str, str]]:
    """The key numbers of a :class:`explorer.Comparison` at ``layer`` (default: its first layer)."""
    test = stats.at(layer)
    holm = len(stats.layers) > 1  # Holm only adjusts anything when several layers were scanned
    rows = [
        ("layer", _fmt(test.layer)),
        ("failed attempts", _fmt(", ".join(map(str, stats.failed_attempts)))),
        ("difference slope (z / attempt)", _fmt(test.slope_z)),
        ("permutation p", _fmt(test.permutation_p)),
    ]
    if holm:
        rows.append(("permutation p (Holm)", _fmt(test.permutation_p_holm)))
    rows.append((f"random directions p (n={test.random.n})", _fmt(test.random.p)))
    if test.shuffled is None:
        rows.append(("shuffled-label null p", "– (no null shipped with the vectors)"))
    else:
        rows.append((f"shuffled-label null p (n={test.shuffled.n})", _fmt(test.shuffled.p)))
    rows.append(("specificity rank", f"{test.rank} of {test.of}"))
    rows.append(("largest rises", html.escape(", ".join(test.top_rises))))
    rows.append(
        ("minimum detectable effect", "not measured" if test.mde_z is None else f"≥ {test.mde_z:.3g} z/attempt")
    )
    rows.append(("verdict", "shown" if test.shown else "not shown"))
    return rows


class CompareView(widgets.VBox):
    """Per-attempt mean z of ``emotion`` in two traces (episode and control) and, in its own panel
    with its own axis, their difference on the same assistant words
    (:func:`explorer.comparison.paired_attempt_means`: the per-attempt numbers
    :func:`explorer.compare` tests).

    Args:
        trace_a, trace_b: traces of the episode and of its matched control (same model, layer).
        emotion: the emotion to compare.
        stats: optional :class:`explorer.Comparison` for the same pair; its key numbers (first
            layer) and verdict are shown in a table.
        labels: names of the two traces in the legend.
        layer: layer to read (default: the first layer of ``stats``, else trace_a's default).
    """

    def __init__(
        self,
        trace_a: IntensityTrace,
        trace_b: IntensityTrace,
        emotion: str,
        stats: Comparison | None = None,
        labels: tuple[str, str] = ("episode", "control"),
        layer: int | None = None,
    ):
        if stats is not None and not isinstance(stats, Comparison):
            raise ExplorerError(f"stats is a {type(stats).__name__}; pass the Comparison that ex.compare returns")
        if layer is None:
            layer = stats.at().layer if stats is not None else trace_a.default_layer
        if stats is not None and layer not in [t.layer for t in stats.layers]:
            raise ExplorerError(
                f"stats has layers {[t.layer for t in stats.layers]}, not {layer}; compare at that layer"
            )
        for trace in (trace_a, trace_b):
            if layer not in trace.layers:
                raise ExplorerError(f"layer {layer} was not traced for '{trace.episode.id}'; it has {trace.layers}")
        if labels[0] == labels[1]:
            raise ExplorerError(f"labels must differ; got {labels[0]!r} twice")
        self.emotion = emotion
        self.layer = int(layer)
        self.labels = tuple(labels)
        pairs = paired_attempt_means(trace_a, trace_b, emotion, layer)
        means = pd.DataFrame(
            {
                labels[0]: [p.episode_assistant for p in pairs],
                labels[1]: [p.control_assistant for p in pairs],
                "difference": [p.difference for p in pairs],
            },
            index=pd.Index([p.attempt for p in pairs], name="attempt"),
            dtype=float,
        )
        self.means = means

        enable_offline_charts()
        self.chart = alt.JupyterChart(self._build_chart())
        self.stats = stats
        self.table = widgets.HTML(self._table_html(stats))
        title = widgets.HTML(
            f"<b>{html.escape(emotion)}</b>: {html.escape(trace_a.episode.id)} vs {html.escape(trace_b.episode.id)}"
            f" · layer {self.layer} · mean z over assistant content tokens per attempt"
        )
        super().__init__(children=[title, self.chart, self.table])

    def _build_chart(self) -> alt.VConcatChart:
        long = self.means.reset_index().melt("attempt", var_name="series", value_name="z").dropna(subset=["z"])
        long["z"] = long["z"].round(4)
        domain = [*self.labels, "difference"]
        colour = alt.Color(
            "series:N", scale=alt.Scale(domain=domain, range=SERIES_COLOURS), legend=alt.Legend(title=None)
        )
        attempts = [int(a) for a in self.means.index]
        x = alt.X("attempt:Q", axis=alt.Axis(values=attempts, format="d", grid=False), title="attempt")
        y = alt.Y("z:Q", title=f"mean z ({self.emotion}, layer {self.layer})")
        tooltip = ["series:N", "attempt:Q", alt.Tooltip("z:Q", format="+.3f")]
        base = alt.Chart(long)
        traces = (
            base.transform_filter(alt.FieldOneOfPredicate(field="series", oneOf=list(self.labels)))
            .mark_line(point=True)
            .encode(x=x, y=y, color=colour, tooltip=tooltip)
        )
        difference = (
            base.transform_filter(alt.FieldEqualPredicate(field="series", equal="difference"))
            .mark_line(point=True, strokeDash=[5, 3])
            .encode(
                x=x,
                y=alt.Y("z:Q", title="episode − control (z)"),
                color=colour,
                tooltip=tooltip,
            )
        )
        zero = alt.Chart(pd.DataFrame({"z": [0.0]})).mark_rule(color="#aaa").encode(y="z:Q")
        # The difference gets its own axis: next to the two levels it would be a flat line at zero.
        return alt.vconcat(
            alt.layer(zero, traces).properties(width=520, height=200),
            alt.layer(zero, difference).properties(
                width=520, height=110, title=alt.TitleParams("on the same assistant words", fontSize=11)
            ),
            spacing=8,
        )

    def _table_html(self, stats: Comparison | None) -> str:
        rows = [] if stats is None else stats_rows(stats, self.layer)
        per_attempt = "".join(
            f"<tr><td>{int(a)}</td>"
            + "".join(f"<td style='text-align:right'>{_signed3(v)}</td>" for v in row)
            + "</tr>"
            for a, row in zip(self.means.index, self.means.to_numpy())
        )
        header = "".join(f"<th>{html.escape(str(c))}</th>" for c in self.means.columns)
        table = (
            "<table style='border-collapse:collapse;font-size:12px'>"
            f"<tr><th>attempt</th>{header}</tr>{per_attempt}</table>"
        )
        if not rows:
            return table
        key_numbers = "".join(f"<tr><td>{html.escape(k)}</td><td><b>{v}</b></td></tr>" for k, v in rows)
        return (
            "<div style='display:flex;gap:32px;align-items:flex-start'>"
            f"{table}<table style='border-collapse:collapse;font-size:12px'>{key_numbers}</table></div>"
        )


def _signed3(value) -> str:
    value = float(value)
    return "–" if value != value else f"{value:+.3f}"
