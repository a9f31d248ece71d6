"""`make site`: every notebook executed and written as a page that works with no kernel and no network.

    python -m widgets.site                                   # notebooks/*.ipynb -> build/site/
    python -m widgets.site notebooks/01-quickstart.ipynb --out build --no-index   # `make demo`

Each notebook runs in a fresh kernel, one cell after another. After a cell that displayed widgets,
one more (unrecorded) request in the same kernel turns each widget, as it then is, into a
kernel-free fragment (:func:`widgets.static.static_html`) that replaces the widget's output; Altair
charts shown as Vega-Lite become fragments too. The page inlines what the fragments need (Vega from
vl-convert's bundle, the transcript's script and styles, ``static.js``) and nothing from a CDN:
no require.js, MathJax or widget manager. Executed notebooks are kept under ``build/.executed``
keyed by the notebook and the explorer and widgets source, so a second build re-runs only what
changed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import html
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter
from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

from explorer.errors import ExplorerError

from .static import RUNTIME_PATH, WIDGET_VIEW, chart_fragment
from .transcript import CSS_PATH, JS_PATH

ROOT = Path(__file__).resolve().parents[1]
STATIC_CSS = Path(__file__).with_name("static.css")
SOURCES = ("explorer", "widgets")  # a change here re-executes the notebooks
TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}{{ resources.evx_head }}{%- endblock extra_css -%}
{%- block footer_js -%}{{ resources.evx_scripts }}{%- endblock footer_js -%}
"""


class _StaticWidgets(ExecutePreprocessor):
    """Executes each cell, then asks the same kernel for kernel-free HTML of the widgets it showed."""

    def preprocess_cell(self, cell, resources, index):
        self.evx_index = index
        cell, resources = super().preprocess_cell(cell, resources, index)
        outputs = cell.get("outputs", []) if cell.cell_type == "code" else []
        shown = [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
        if shown:
            ids = [o["data"][WIDGET_VIEW]["model_id"] for o in shown]
            probe = nbformat.v4.new_code_cell(f"__import__('widgets.static').static.display_snapshots({ids!r})")
            try:
                self.execute_cell(probe, index, store_history=False)
            finally:
                self.nb.cells[index] = cell  # nbclient files the probe under the cell's index
            fragments = [o["data"]["text/html"] for o in probe.outputs if o.get("output_type") == "display_data"]
            if len(fragments) != len(shown):
                raise ExplorerError(f"cell {index}: could not make static HTML of its widgets")
            for output, fragment in zip(shown, fragments):
                text = output["data"].get("text/plain", "")
                output["data"] = {"text/html": fragment, "text/plain": text}
        return cell, resources


def _vega_outputs_to_fragments(nb) -> None:
    """Charts displayed as Vega-Lite (not as widgets) become fragments too: no renderer needed."""
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data", {})
            kind = next((k for k in data if re.fullmatch(r"application/vnd\.vega(lite)?\.v\d+\+json", k)), None)
            if kind is not None:
                fragment = chart_fragment(dict(data[kind]))
                output["data"] = {"text/html": fragment, "text/plain": data.get("text/plain", "")}


def source_digest(notebook: Path) -> str:
    """What an executed notebook depends on: its own file and every file of the two packages (but
    this one, which only writes pages from executed notebooks)."""
    digest = hashlib.sha256(notebook.read_bytes())
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path != Path(__file__).resolve():
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def execute(notebook: Path, cache: Path | None, timeout: int = 600, force: bool = False) -> tuple:
    """The notebook executed, its widgets as kernel-free fragments; (notebook node, seconds, cached)."""
    if not notebook.is_file():
        raise ExplorerError(f"{notebook}: no such notebook")
    key = source_digest(notebook)
    cached_nb = cache / f"{notebook.stem}.ipynb" if cache else None
    cached_key = cache / f"{notebook.stem}.key" if cache else None
    if cache and not force and cached_nb.is_file() and cached_key.is_file():
        meta = json.loads(cached_key.read_text())
        if meta.get("key") == key:
            return nbformat.read(cached_nb, as_version=4), meta.get("seconds", 0.0), True
    nb = nbformat.read(notebook, as_version=4)
    executor = _StaticWidgets(timeout=timeout, kernel_name="python3")
    started = time.monotonic()
    try:
        executor.preprocess(nb, {"metadata": {"path": str(notebook.parent)}})
    except CellExecutionError as error:
        where = getattr(executor, "evx_index", "?")
        first = str(error.evalue).splitlines()[0] if error.evalue else ""
        raise ExplorerError(
            f"{notebook}: cell {where} raised {error.ename}: {first}; run it in JupyterLab to see the traceback"
        ) from None
    seconds = round(time.monotonic() - started, 1)
    nb.metadata.pop("widgets", None)  # the live widgets' state: not needed, and it would pull in a CDN manager
    _vega_outputs_to_fragments(nb)
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, cached_nb)
        cached_key.write_text(json.dumps({"key": key, "seconds": seconds}))
    return nb, seconds, False


@functools.lru_cache(maxsize=1)
def _vega_bundle() -> str:
    import vl_convert

    return vl_convert.javascript_bundle()


def _script(source: str, module: bool = True) -> str:
    # nothing in a script may close the element early
    source = source.replace("</script", "<\\/script")
    return f'<script type="{"module" if module else "text/javascript"}">\n{source}\n</script>\n'


def page_assets(nb) -> tuple[str, str]:
    """(head, scripts): the styles and scripts a page's fragments need, inline; empty without any."""
    text = "".join(
        "".join(o.get("data", {}).get("text/html", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    if "data-evx-kind=" not in text:
        return "", ""
    styles = STATIC_CSS.read_text(encoding="utf-8")
    scripts = _script(_vega_bundle())
    if 'data-evx-kind="scrubber"' in text:
        styles = CSS_PATH.read_text(encoding="utf-8") + "\n" + styles
        transcript = JS_PATH.read_text(encoding="utf-8")
        if "export default" not in transcript:
            raise ExplorerError(f"{JS_PATH}: expected an 'export default' for the widget")
        scripts += _script(transcript.replace("export default", "window.EVX_TRANSCRIPT =", 1))
    scripts += _script(RUNTIME_PATH.read_text(encoding="utf-8"))
    return f"<style>\n{styles}\n</style>\n", scripts


def render_page(nb, name: str) -> str:
    """The executed notebook as one HTML page that needs no kernel and no network."""
    loader = DictLoader({"evx_site.html.j2": TEMPLATE})
    exporter = HTMLExporter(template_name="lab", extra_loaders=[loader], template_file="evx_site.html.j2")
    head, scripts = page_assets(nb)
    body, _ = exporter.from_notebook_node(
        copy.deepcopy(nb), resources={"metadata": {"name": name}, "evx_head": head, "evx_scripts": scripts}
    )
    return body


@dataclass
class Page:
    notebook: str
    path: Path
    title: str
    summary: str
    seconds: float
    cached: bool

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


def _title_and_summary(nb, fallback: str) -> tuple[str, str]:
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.strip().splitlines()
        title = next((ln.lstrip("#").strip() for ln in lines if ln.startswith("#")), fallback)
        paragraph: list[str] = []  # the first paragraph after the heading
        for line in lines:
            if line.startswith("#") or (not line.strip() and not paragraph):
                continue
            if not line.strip():
                break
            paragraph.append(line.strip())
        summary = re.sub(r"[*_`]", "", " ".join(paragraph))
        title = re.sub(r"[*_`]", "", title)
        return title, summary if len(summary) <= 300 else summary[:299] + "…"
    return fallback, ""


def build(notebooks: list[Path], out: Path, cache: Path | None, index: bool = True, force: bool = False) -> list[Page]:
    out.mkdir(parents=True, exist_ok=True)
    pages, failed = [], []
    for notebook in notebooks:  # one at a time: each kernel gets the cores to itself
        try:
            nb, seconds, cached = execute(notebook, cache, force=force)
        except ExplorerError as error:  # the other notebooks still get their pages
            print(f"error: {error}", file=sys.stderr, flush=True)
            failed.append(notebook.name)
            continue
        path = out / f"{notebook.stem}.html"
        path.write_text(render_page(nb, notebook.stem), encoding="utf-8")
        title, summary = _title_and_summary(nb, notebook.stem)
        pages.append(Page(notebook.name, path, title, summary, seconds, cached))
        state = "reused" if cached else f"executed in {seconds:.0f} s"
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB ({state})", flush=True)
    if index:
        write_index(pages + earlier_pages(out, pages, notebooks), out / "index.html")
    if failed:
        raise ExplorerError(f"{len(failed)} notebook(s) failed: {', '.join(failed)}; their pages were not written")
    return pages


def earlier_pages(out: Path, built: list[Page], notebooks: list[Path]) -> list[Page]:
    """Pages an earlier build left in ``out`` whose notebook (beside the ones built now, or in
    ``notebooks/``) still exists, so building one notebook keeps the others in the index. A page
    whose notebook is gone (renamed or removed) is left on disk but not listed."""
    done = {page.path.name for page in built}
    folders = {n.resolve().parent for n in notebooks} | {ROOT / "notebooks"}
    found = []
    for path in sorted(out.glob("*.html")):
        if path.name in done or path.name == "index.html":
            continue
        source = next((f / f"{path.stem}.ipynb" for f in folders if (f / f"{path.stem}.ipynb").is_file()), None)
        if source is None:
            continue
        title, summary = _title_and_summary(nbformat.read(source, as_version=4), path.stem)
        found.append(Page(source.name, path, title, summary, 0.0, True))
    return found


def write_index(pages: list[Page], path: Path) -> Path:
    pages = sorted(pages, key=lambda page: page.path.name)
    items = "\n".join(
        f'<li><a href="{html.escape(p.path.name)}">{html.escape(p.title)}</a>'
        f' <span class="meta">{html.escape(p.notebook)} · {p.size_mb:.1f} MB</span>'
        f"<p>{html.escape(p.summary)}</p></li>"
        for p in pages
    )
    path.write_text(
        f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Emotion Vector Explorer — notebooks</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 860px; margin: 32px auto; color: #222; padding: 0 16px; }}
li {{ margin: 14px 0; }} a {{ font-weight: 600; font-size: 17px; }} .meta {{ color: #777; font-size: 12px; }}
p {{ margin: 4px 0; color: #444; }}
</style>
</head>
<body>
<h1>Emotion Vector Explorer — notebooks</h1>
<p>Each page is a notebook executed on {html.escape(time.strftime("%Y-%m-%d"))}. The scrubbers, comparisons
and charts work in the page itself: no kernel and no network needed. To change the code, open the
notebook in JupyterLab (<code>make lab</code>).</p>
<ul>
{items}
</ul>
</body>
</html>
""",
        encoding="utf-8",
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m widgets.site", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / ".executed", help="executed notebooks")
    parser.add_argument("--no-index", action="store_true", help="no index.html (a single page)")
    parser.add_argument("--force", action="store_true", help="execute even when an executed copy is current")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    try:
        pages = build(notebooks, args.out, args.cache, index=not args.no_index, force=args.force)
    except ExplorerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    total = sum(p.size_mb for p in pages)
    where = f"; open {args.out / 'index.html'}" if not args.no_index else ""
    print(f"{len(pages)} page(s) in {args.out} ({total:.1f} MB){where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
