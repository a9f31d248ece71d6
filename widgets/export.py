"""Files from widgets: charts as PNG/SVG and a scrubber as one standalone HTML page."""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import altair as alt
import vl_convert

from explorer import cache
from explorer.errors import ExplorerError

from .transcript import CSS_PATH, JS_PATH

if TYPE_CHECKING:
    from .scrubber import EpisodeScrubber


def chart_spec(chart: Any) -> dict:
    """The Vega-Lite spec of an Altair chart, a JupyterChart (with its current param values), or a spec dict."""
    if isinstance(chart, alt.JupyterChart):
        current = dict(chart._params)
        spec = chart.chart.to_dict()
        # The widget's params (e.g. the scrubber's rule position) move after the chart was built.
        for param in spec.get("params", []):
            if param.get("name") in current and "select" not in param and current[param["name"]] is not None:
                value = current[param["name"]]
                param["value"] = int(value) if isinstance(value, float) and value.is_integer() else value
        return spec
    if isinstance(chart, dict):
        return chart
    if hasattr(chart, "to_dict"):
        return chart.to_dict()
    raise ExplorerError(f"cannot save a {type(chart).__name__}: pass an Altair chart or an alt.JupyterChart")


def save_chart(chart: Any, path: str | Path, scale: float = 2.0) -> Path:
    """Write ``chart`` (Altair chart or JupyterChart) as PNG or SVG, chosen by the file suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    spec = chart_spec(chart)
    if suffix == ".png":
        path.write_bytes(vl_convert.vegalite_to_png(spec, scale=scale))
    elif suffix == ".svg":
        path.write_text(vl_convert.vegalite_to_svg(spec), encoding="utf-8")
    else:
        raise ExplorerError(f"{path}: cannot tell the format from '{suffix or 'no suffix'}'; use .png or .svg")
    return path


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: '<' escaped so no text can close the element early."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _module_as_script(source: str) -> str:
    """transcript.js is an ES module for anywidget; on a plain page its default export becomes a constant."""
    if "export default" not in source:
        raise ExplorerError(f"{JS_PATH}: expected an 'export default' for the widget")
    return source.replace("export default", "const EVX_WIDGET =", 1)


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script that sets ``window.vegaEmbed`` (from vl-convert,
    so no network); built once (about 15 s) and kept in the user cache per vl-convert version."""
    path = cache.cache_root() / "vega" / f"vl-convert-{vl_convert.__version__}.js"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    source = vl_convert.javascript_bundle()
    cache.write_file_atomic(path, source.encode("utf-8"))
    return source


def _inline_script(source: str, module: bool = False) -> str:
    """A script element holding ``source``, with nothing in it able to close the element early."""
    kind = ' type="module"' if module else ""
    safe = source.replace("</script", "<\\/script")
    return f"<script{kind}>\n{safe}\n</script>"


_PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }
h1 { font-size: 20px; margin-bottom: 2px; }
.evx-sub { color: #666; margin-top: 0; }
.evx-controls { display: flex; gap: 8px; align-items: center; margin: 10px 0; flex-wrap: wrap; }
.evx-controls input[type=range] { flex: 1; min-width: 200px; }
#evx-where { font-size: 12px; color: #444; min-width: 260px; }
figure { margin: 12px 0; }
figcaption { font-size: 12px; color: #666; }
.vega-bindings { font-size: 12px; margin: 4px 0; }
"""

# A stand-in for anywidget's model: the same get/set/on/off/save_changes surface, no kernel.
_BOOT = """
(function () {
  const data = JSON.parse(document.getElementById("evx-data").textContent);
  const state = Object.assign({}, data.widget);
  const listeners = {};
  const model = {
    get: (key) => state[key],
    set: (key, value) => {
      if (state[key] === value) return;
      state[key] = value;
      (listeners["change:" + key] || []).slice().forEach((fn) => fn());
    },
    on: (name, fn) => { (listeners[name] = listeners[name] || []).push(fn); },
    off: (name, fn) => { listeners[name] = (listeners[name] || []).filter((f) => f !== fn); },
    save_changes: () => {},
  };
  const slider = document.getElementById("evx-position");
  const where = document.getElementById("evx-where");
  const emotion = document.getElementById("evx-emotion");
  const layer = document.getElementById("evx-layer");
  const include = document.getElementById("evx-include");
  const starts = data.widget.messages.map((m) => m.first_token).filter((t) => t !== null).sort((a, b) => a - b);
  const turns = {};
  for (const t of data.turns || []) turns[[t.emotion, t.included, t.message].join("|")] = t.mean;
  function signed(v) {
    return v === null || v === undefined ? "–" : (v >= 0 ? "+" : "") + v.toFixed(2);
  }
  function describe() {
    const i = state.position;
    const token = state.tokens[i];
    const values = (state.values[state.emotion] || {})[String(state.layer)] || [];
    const left = !state.include_template && (i === 0 || token.in_content === false);
    const attempt = token.attempt === null ? "" : " · attempt " + token.attempt;
    const value = left ? "– (template token, left out)" : signed(values[i]);
    let text = "token " + i + " · message " + (token.message_index + 1) + "/" + state.messages.length +
      " · " + token.role + attempt + " · " + state.emotion + " z = " + value;
    if (state.layer === data.chart_layer) {
      const mean = turns[[state.emotion, state.include_template ? 1 : 0, token.message_index].join("|")];
      if (mean !== undefined && mean !== null) text += " · turn mean " + signed(mean);
    } else {
      text += " · charts: layer " + data.chart_layer;
    }
    where.textContent = text;
    slider.value = String(i);
  }
  model.on("change:position", describe);
  model.on("change:emotion", describe);
  model.on("change:layer", describe);
  model.on("change:include_template", describe);
  slider.addEventListener("input", () => model.set("position", Number(slider.value)));
  emotion.addEventListener("change", () => model.set("emotion", emotion.value));
  layer.addEventListener("change", () => model.set("layer", Number(layer.value)));
  include.addEventListener("change", () => model.set("include_template", Boolean(include.checked)));
  function step(direction) {
    const current = state.tokens[state.position].message_index;
    const first = data.widget.messages[current].first_token;
    const target = direction < 0 ? starts.filter((s) => s < first).pop() : starts.find((s) => s > first);
    if (target !== undefined) model.set("position", target);
  }
  document.getElementById("evx-prev").addEventListener("click", () => step(-1));
  document.getElementById("evx-next").addEventListener("click", () => step(1));
  EVX_WIDGET.render({ model, el: document.getElementById("evx-transcript") });
  describe();
  window.EVX_PAGE = { model };
})();
"""

# The charts, live: the saved spec drawn by vega-embed (its smoothing menu works on its own) and
# kept in step with the page's slider, emotion and template toggle through the chart's params.
_CHART_BOOT = """
(async function () {
  const page = window.EVX_PAGE;
  const box = document.getElementById("evx-chart");
  const spec = JSON.parse(document.getElementById("evx-spec").textContent);
  box.replaceChildren();  // the saved picture gives way to the live chart
  const { view } = await window.vegaEmbed(box, spec, { renderer: "svg", actions: false });
  const sync = () => {
    view.signal("position", page.model.get("position"));
    view.signal("emotion", page.model.get("emotion"));
    view.signal("include", page.model.get("include_template") ? 1 : 0);
    return view.runAsync();
  };
  for (const name of ["position", "emotion", "include_template"]) page.model.on("change:" + name, sync);
  page.view = view;
  await sync();
})();
"""


def _options(values: list, selected: Any) -> str:
    return "".join(
        f'<option value="{html.escape(str(v))}"{" selected" if v == selected else ""}>{html.escape(str(v))}</option>'
        for v in values
    )


def scrubber_html(scrubber: EpisodeScrubber) -> str:
    """A page that works from a file: transcript JS/CSS, data, the charts' spec and Vega all inline.

    The charts are drawn live (smoothing menu, turn panel, difference line, template toggle) at the
    layer shown when the page was saved; a picture of them as saved stands in until they are.
    """
    view = scrubber.transcript
    trace = scrubber.trace
    widget_state = {
        "tokens": view.tokens,
        "messages": view.messages,
        "values": view.values,
        "emotions": view.emotions,
        "emotion": view.emotion,
        "layer": view.layer,
        "position": view.position,
        "scale": view.scale,
        "scale_all": view.scale_all,
        "include_template": view.include_template,
    }
    turns = scrubber.turn_data(scrubber.layer)[["emotion", "included", "message", "mean"]].to_dict("records")
    spec = chart_spec(scrubber.chart)
    svg = vl_convert.vegalite_to_svg(spec)
    title = html.escape(trace.episode.title or trace.episode.id)
    n = len(view.tokens)
    checked = " checked" if view.include_template else ""
    versus = "" if scrubber.control is None else f" · control {html.escape(scrubber.control.episode.id)}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} · {html.escape(trace.model_name)}</title>
<style>{_PAGE_CSS}
{CSS_PATH.read_text(encoding="utf-8")}</style>
</head>
<body>
<h1>{title}</h1>
<p class="evx-sub">{html.escape(trace.episode.id)} · {html.escape(trace.model_name)} · {n} tokens ·
layers {html.escape(", ".join(map(str, trace.layers)))}{versus}</p>
<div class="evx-controls">
<button id="evx-prev" title="previous message">◀ turn</button>
<input id="evx-position" type="range" min="0" max="{max(n - 1, 0)}" value="{view.position}">
<button id="evx-next" title="next message">turn ▶</button>
<label>emotion <select id="evx-emotion">{_options(view.emotions, view.emotion)}</select></label>
<label>layer <select id="evx-layer">{_options(trace.layers, view.layer)}</select></label>
<label title="the first token (attention sink) and chat-template tokens: left out of numbers, colours and axes">
<input id="evx-include" type="checkbox"{checked}> include template tokens</label>
</div>
<div id="evx-where"></div>
<figure>
<div id="evx-chart">{svg}</div>
<figcaption>Layer {view.layer} (as saved; the layer menu recolours the transcript). Top: each emotion's z, a
rolling mean over the tokens chosen under "smoothing". Bottom: the selected emotion's mean per turn with
its 95% interval{"" if scrubber.control is None else ", and the episode minus its control per attempt"}.
</figcaption>
</figure>
<div id="evx-transcript"></div>
<script type="application/json" id="evx-data">{
        _script_json({"widget": widget_state, "turns": turns, "chart_layer": scrubber.layer})
    }</script>
<script type="application/json" id="evx-spec">{_script_json(spec)}</script>
<script>
{_module_as_script(JS_PATH.read_text(encoding="utf-8"))}
{_BOOT}
</script>
{_inline_script(vega_bundle(), module=True)}
{_inline_script(_CHART_BOOT, module=True)}
</body>
</html>
"""
