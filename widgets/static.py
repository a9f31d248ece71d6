"""Widgets as HTML that works with no kernel and no network: what a page built by `make site` shows.

A live widget draws itself from its kernel; a page exported from an executed notebook has none,
so its widget outputs would be blank. :func:`static_html` turns a widget, as it is at that moment,
into a fragment of HTML (markup and its data as JSON) that :data:`RUNTIME_PATH` brings to life in
the page: the scrubber's slider, play and turn buttons, emotion and layer pickers move the
transcript and the chart as in the notebook; the atlas's layer slider swaps its charts; every
Altair chart is drawn by Vega from the JavaScript bundle that ships inside vl-convert.

``widgets.site`` calls :func:`display_snapshots` in the notebook's kernel after each cell, so the
fragment is made from the live Python object, then replaces the widget's output with it.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import ipywidgets as ipw

from .export import _script_json, chart_spec

RUNTIME_PATH = Path(__file__).with_name("static.js")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_HIDDEN = (ipw.Play,)  # a play button without its kernel-side link plays nothing


def _fragment(kind: str, markup: str, data: dict) -> str:
    return (
        f'<div class="evx-static evx-static-{kind}" data-evx-kind="{kind}">{markup}'
        f'<script type="application/json" class="evx-static-data">{_script_json(data)}</script></div>'
    )


def pack_specs(specs: list[dict]) -> dict:
    """Vega-Lite specs with their inline datasets stored column by column, each distinct column
    once: charts of the same rows at several layers share their label columns. The runtime
    (``unpack`` in static.js) puts the rows back."""
    columns: list[list] = []
    seen: dict[str, int] = {}
    datasets: dict[str, dict] = {}
    bare = []
    for spec in specs:
        spec = dict(spec)
        for name, rows in (spec.pop("datasets", None) or {}).items():
            if name in datasets:
                continue
            fields = list(dict.fromkeys(k for row in rows for k in row))
            packed = {}
            for field in fields:
                values = [_json_safe(row.get(field)) for row in rows]
                key = json.dumps(values, separators=(",", ":"))
                if key not in seen:
                    seen[key] = len(columns)
                    columns.append(values)
                packed[field] = seen[key]
            datasets[name] = {"n": len(rows), "fields": packed}
        bare.append(spec)
    return {"columns": columns, "datasets": datasets, "specs": bare}


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def chart_fragment(chart: Any, options: dict | None = None) -> str:
    """An Altair chart, a JupyterChart (with its current params) or a Vega-Lite spec dict, drawn
    in the page by vega-embed."""
    spec = chart_spec(chart)
    if options is None and isinstance(chart, ipw.DOMWidget):
        options = dict(getattr(chart, "embed_options", None) or {})
    options = {"renderer": "svg", **(options or {})}  # SVG: text a reader can select and a test can read
    return _fragment("chart", '<div class="evx-vega"></div>', {"charts": pack_specs([spec]), "options": options})


# --- the scrubber -------------------------------------------------------------------------------
def _select(cls: str, label: str, values: list, selected: Any) -> str:
    options = "".join(
        f'<option value="{html.escape(str(v))}"{" selected" if v == selected else ""}>{html.escape(str(v))}</option>'
        for v in values
    )
    return f'<label class="evx-s-label">{label} <select class="{cls}">{options}</select></label>'


def _transcript_state(view) -> dict:
    """Every synced trait of the transcript anywidget: the front end reads the same model."""
    state = view.get_state()
    return {k: v for k, v in state.items() if not k.startswith("_") and k not in ("layout", "tabbable", "tooltip")}


LAYER_CHART_BUDGET = 1_500_000  # bytes of JSON: the charts of other layers travel only within it
# the chart's params that follow the scrubber's state, by the transcript trait they mirror
_SIGNALS = {"position": "position", "emotion": "emotion", "include_template": "include"}


def _layer_specs(scrubber, budget: int | None = None) -> dict[int, dict]:
    """The chart's spec at the shown layer and, when they all fit in ``budget``, at every other
    traced layer (made by the widget itself: the layer picker rebuilds its chart)."""
    shown = scrubber.layer
    specs = {shown: chart_spec(scrubber.chart)}
    others = [layer for layer in scrubber.trace.layers if layer != shown]
    budget = LAYER_CHART_BUDGET if budget is None else budget
    if not others or len(json.dumps(specs[shown])) * len(others) > budget:
        return specs
    try:
        for layer in others:
            scrubber.layer_dropdown.value = layer
            specs[layer] = chart_spec(scrubber.chart)
    finally:
        scrubber.layer_dropdown.value = shown
    return specs


def _scrubber_controls(scrubber, n: int) -> str:
    return (
        '<div class="evx-s-controls">'
        '<button class="evx-s-play" title="play through the tokens">▶ play</button>'
        f'<label class="evx-s-label">token <input class="evx-s-position" type="range" min="0" max="{max(n - 1, 0)}"'
        f' value="{scrubber.position}"></label>'
        f'<span class="evx-s-index">{scrubber.position}</span>'
        '<button class="evx-s-prev" title="first token of the previous message">◀ turn</button>'
        '<button class="evx-s-next" title="first token of the next message">turn ▶</button>'
        "</div>"
    )


def _scrubber_pickers(scrubber) -> str:
    include = getattr(scrubber, "include_box", None)
    toggle = (
        ""
        if include is None
        else f'<label class="evx-s-label"><input class="evx-s-include" type="checkbox"'
        f"{' checked' if include.value else ''}> {html.escape(include.description)}</label>"
    )
    return (
        '<div class="evx-s-controls">'
        + _select("evx-s-emotion", "emotion", scrubber.emotions, scrubber.emotion)
        + _select("evx-s-layer", "layer", list(scrubber.trace.layers), scrubber.layer)
        + toggle
        + "</div>"
    )


def scrubber_fragment(scrubber) -> str:
    """The EpisodeScrubber as it stands: its parts in the widget's order, driven by the page's script."""
    trace, view = scrubber.trace, scrubber.transcript
    n = len(trace.tokens)
    where = f'<div class="evx-s-where">{scrubber.where.value}</div>'
    parts, placed_where = [], False
    for i, child in enumerate(scrubber.children):
        if child is scrubber.transcript:
            parts.append('<div class="evx-s-transcript"></div>')
        elif child is scrubber.chart:
            parts.append('<div class="evx-vega"></div><div class="evx-s-chart-note"></div>')
        elif child is scrubber.where:
            parts.append(where)
            placed_where = True
        elif isinstance(child, ipw.Box) and any(c is scrubber.slider for c in child.children):
            parts.append(_scrubber_controls(scrubber, n))
        elif isinstance(child, ipw.Box) and any(c is scrubber.emotion_dropdown for c in child.children):
            parts.append(_scrubber_pickers(scrubber))
            placed_where = placed_where or any(c is scrubber.where for c in child.children)
            if any(c is scrubber.where for c in child.children):
                parts.append(where)
        elif i == 0 and isinstance(child, ipw.HTML):
            parts.append(f'<div class="evx-s-title">{child.value}</div>')
        else:
            parts.append(static_html(child))
    if not placed_where:
        parts.append(where)
    specs = _layer_specs(scrubber)
    layers = list(specs)
    names = {p.get("name") for p in specs[scrubber.layer].get("params", [])}
    data = {
        "transcript": _transcript_state(view),
        "charts": pack_specs([specs[layer] for layer in layers]),
        "chart_layers": layers,
        "signals": {trait: param for trait, param in _SIGNALS.items() if param in names},
        "n_messages": len(trace.episode.messages),
        "interval": int(scrubber.play.interval),
        "options": dict(getattr(scrubber.chart, "embed_options", None) or {}),
    }
    return _fragment("scrubber", "".join(parts), data)


# --- the atlas ------------------------------------------------------------------------------------
def atlas_fragment(atlas) -> str:
    """The EmotionAtlas with every layer's charts, so the layer slider works in the page."""
    slider = atlas.layer_slider
    shown = slider.value
    per_layer: list[list[dict]] = []
    layers = list(range(slider.min, slider.max + 1))
    try:
        for layer in layers:
            slider.value = layer  # the widget's own reaction rebuilds its charts
            charts = [atlas.pca_chart, atlas.norms_chart, atlas.cosine_chart]
            per_layer.append([chart_spec(c) for c in charts if c is not None])
    finally:
        slider.value = shown
    width = len(per_layer[0])
    packed = pack_specs([spec for specs in per_layer for spec in specs])
    markup = (
        '<div class="evx-s-controls"><label class="evx-s-label">layer '
        f'<input class="evx-a-layer" type="range" min="{layers[0]}" max="{layers[-1]}" value="{shown}"></label>'
        f'<span class="evx-a-value">{shown}</span></div>'
        '<div class="evx-a-top">' + '<div class="evx-vega"></div>' * (width - 1) + "</div>"
        '<div class="evx-vega"></div>'
    )
    extra = "".join(
        static_html(c) for c in atlas.children if isinstance(c, ipw.HTML)
    )  # e.g. the note that the ratings panel is left out
    data = {"charts": packed, "layers": layers, "layer": shown, "per_layer": width, "options": {"renderer": "svg"}}
    return _fragment("layers", markup + extra, data)


# --- any other widget -------------------------------------------------------------------------------
def _output_html(bundle: dict) -> str:
    data = bundle.get("data", {})
    if WIDGET_VIEW in data:
        found = ipw.widget._instances.get(data[WIDGET_VIEW].get("model_id"))
        return static_html(found) if found is not None else ""
    if "text/html" in data:
        value = data["text/html"]
        return "".join(value) if isinstance(value, list) else value
    for kind in ("image/png", "image/jpeg"):
        if kind in data:
            return f'<img src="data:{kind};base64,{data[kind]}">'
    text = bundle.get("text") or data.get("text/plain") or ""
    text = "".join(text) if isinstance(text, list) else text
    return f"<pre>{html.escape(text)}</pre>" if text else ""


def static_html(widget: Any) -> str:
    """A kernel-free HTML fragment for ``widget`` as it is now; the page's runtime makes it move."""
    from altair import JupyterChart

    from .atlas import EmotionAtlas
    from .scrubber import EpisodeScrubber

    if isinstance(widget, EpisodeScrubber):
        return scrubber_fragment(widget)
    if isinstance(widget, EmotionAtlas):
        return atlas_fragment(widget)
    if isinstance(widget, JupyterChart):
        return chart_fragment(widget)
    if isinstance(widget, _HIDDEN):
        return ""
    if isinstance(widget, ipw.Box):
        direction = "row" if isinstance(widget, ipw.HBox) else "column"
        inner = "".join(static_html(child) for child in widget.children)
        return f'<div class="evx-box evx-box-{direction}">{inner}</div>'
    if isinstance(widget, ipw.HTML | ipw.HTMLMath):
        return f'<div class="evx-html">{widget.value}</div>'
    if isinstance(widget, ipw.Label):
        return f'<span class="evx-label">{html.escape(str(widget.value))}</span>'
    if isinstance(widget, ipw.Output):
        return '<div class="evx-output">' + "".join(_output_html(o) for o in widget.outputs) + "</div>"
    if isinstance(widget, ipw.Button):
        return f'<button class="evx-control" disabled>{html.escape(widget.description)}</button>'
    if isinstance(widget, ipw.ValueWidget):
        shown = getattr(widget, "label", None) or widget.value
        name = getattr(widget, "description", "") or ""
        return (
            f'<span class="evx-control" title="fixed when the page was built">'
            f"{html.escape(name)} {html.escape(str(shown))}</span>"
        )
    return f'<div class="evx-static-note">({html.escape(type(widget).__name__)}: needs a live kernel)</div>'


def display_snapshots(model_ids: list[str]) -> None:
    """Display one ``text/html`` fragment per widget model id (run inside the notebook's kernel)."""
    from IPython.display import display

    for model_id in model_ids:
        widget = ipw.widget._instances.get(model_id)
        if widget is None:
            fragment = '<div class="evx-static-note">(this widget was closed before the page was built)</div>'
        else:
            fragment = static_html(widget)
        display({"text/html": fragment}, raw=True)
