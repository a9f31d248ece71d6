"""Kernel-free pages (widgets.static, widgets.site) on synthetic traces: what the page carries.

The browser side is tested in tests/browser/test_static_pages.py.
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from widgets import CompareView, EmotionAtlas, EpisodeScrubber
from widgets.site import _vega_outputs_to_fragments, page_assets, render_page
from widgets.static import WIDGET_VIEW, pack_specs, static_html

from .test_widgets import NORMS, STATS, make_trace, make_vectors


def fragment_data(fragment: str) -> dict:
    found = re.search(r'<script type="application/json" class="evx-static-data">(.*?)</script></div>$', fragment, re.S)
    assert found, fragment[-300:]
    return json.loads(found.group(1))


def unpack(packed: dict) -> list[dict]:
    """The Python mirror of static.js's unpack: rows back from the shared columns."""
    datasets = {
        name: [{f: packed["columns"][c][i] for f, c in d["fields"].items()} for i in range(d["n"])]
        for name, d in packed["datasets"].items()
    }
    return [
        {**spec, "datasets": {n: rows for n, rows in datasets.items() if json.dumps(n) in json.dumps(spec)}}
        for spec in packed["specs"]
    ]


def page_of(*fragments: str) -> str:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("shown")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": f, "text/plain": ""}) for f in fragments]
    nb.cells = [nbformat.v4.new_markdown_cell("# A page\n\nabout it"), cell]
    return render_page(nb, "page")


def test_packed_specs_round_trip_and_share_columns():
    rows_a = [{"a": "x", "b": "y", "v": 0.5}, {"a": "y", "b": "x", "v": None}]
    rows_b = [{"a": "x", "b": "y", "v": -1.0}, {"a": "y", "b": "x", "v": 2.0}]
    specs = [
        {"mark": "rect", "data": {"name": "d1"}, "datasets": {"d1": rows_a}},
        {"mark": "rect", "data": {"name": "d2"}, "datasets": {"d2": rows_b}},
    ]
    packed = pack_specs(specs)
    assert len(packed["columns"]) == 4  # a and b once, two different v columns
    assert unpack(packed) == specs


def test_scrubber_fragment_carries_its_state_and_every_layers_chart():
    trace = make_trace()
    scrubber = EpisodeScrubber(trace, emotions=["desperate", "calm"], layer=2)
    scrubber.slider.value = 9
    scrubber.emotion_dropdown.value = "calm"
    fragment = static_html(scrubber)
    assert fragment.startswith('<div class="evx-static evx-static-scrubber" data-evx-kind="scrubber">')
    data = fragment_data(fragment)
    state = data["transcript"]
    assert [t["text"] for t in state["tokens"]] == trace.tokens["token"].tolist()
    assert (state["position"], state["emotion"], state["layer"]) == (9, "calm", 2)
    assert state["values"]["calm"]["4"] == scrubber.transcript.values["calm"]["4"]
    assert data["chart_layers"] == [2, 4]  # the shown layer first; the small trace's others fit
    specs = unpack(data["charts"])
    params = {p["name"]: p.get("value") for p in specs[0]["params"]}
    assert params["position"] == 9 and params["emotion"] == "calm"
    assert "layer 4" in json.dumps(specs[1]) and "layer 4" not in json.dumps(specs[0])
    assert data["signals"]["position"] == "position" and data["signals"]["emotion"] == "emotion"
    assert scrubber.layer == 2 and scrubber.transcript.layer == 2  # the widget is left as it was
    assert f'class="evx-s-position" type="range" min="0" max="{len(trace.tokens) - 1}" value="9"' in fragment


def test_scrubber_fragment_keeps_one_layer_when_the_others_do_not_fit(monkeypatch):
    import widgets.static

    monkeypatch.setattr(widgets.static, "LAYER_CHART_BUDGET", 1000)
    scrubber = EpisodeScrubber(make_trace(), emotions=["desperate"], layer=4)
    assert fragment_data(static_html(scrubber))["chart_layers"] == [4]


def test_token_text_cannot_close_the_data_script():
    from .test_widgets import MESSAGES

    messages = [dict(m) for m in MESSAGES]
    messages[2]["content"] = "</script><script>alert(1)</script> done"
    fragment = static_html(EpisodeScrubber(make_trace(messages=messages), emotions=["calm"]))
    assert "</script><script>alert(1)" not in fragment
    assert fragment.count("</script>") == 1
    assert any("alert(1)" in t["text"] for t in fragment_data(fragment)["transcript"]["tokens"])


def test_atlas_fragment_has_each_layers_charts_and_restores_the_slider():
    vectors = make_vectors(n_layers=4)
    atlas = EmotionAtlas(vectors, norms=NORMS, layer=1)
    data = fragment_data(static_html(atlas))
    assert data["layers"] == [0, 1, 2, 3] and data["layer"] == 1 and data["per_layer"] == 3
    specs = unpack(data["charts"])
    assert len(specs) == 4 * 3
    cosine_3 = next(rows for rows in specs[3 * 3 + 2]["datasets"].values() if "cosine" in rows[0])
    matrix = vectors.cosine_matrix(3)
    assert all(r["cosine"] == pytest.approx(matrix.loc[r["a"], r["b"]], abs=1e-3) for r in cosine_3)
    assert atlas.layer == 1 and atlas.pca_chart.spec["title"]["text"].startswith("layer 1")


def test_compare_view_is_drawn_from_its_parts():
    control = make_trace(seed=11, episode_id="synthetic-control")
    fragment = static_html(CompareView(make_trace(), control, "desperate", stats=STATS))
    assert 'data-evx-kind="chart"' in fragment and "permutation p" in fragment and "0.0417" in fragment


def test_page_inlines_what_its_fragments_need_and_fetches_nothing():
    scrubber = EpisodeScrubber(make_trace(), emotions=["desperate", "calm"])
    page = page_of(static_html(scrubber))
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=[\"']?https?:", page)
    assert "require.js" not in page and "mathjax" not in page.lower() and "html-manager" not in page
    assert page.count("window.vegaEmbed=") == 1 and "window.EVX_TRANSCRIPT =" in page
    assert page.index("window.vegaEmbed=") < page.index("window.EVX_TRANSCRIPT =") < page.index("MOUNTS")
    assert ".evx-token" in page  # the transcript's styles


def test_page_without_widgets_carries_no_scripts():
    assert page_assets(nbformat.v4.new_notebook()) == ("", "")
    assert "vegaEmbed" not in page_of("<b>just html</b>")


def test_vega_lite_outputs_become_chart_fragments():
    nb = nbformat.v4.new_notebook()
    schema = "https://vega.github.io/schema/vega-lite/v6.json"
    spec = {"$schema": schema, "mark": "point", "data": {"values": [{"a": 1}]}}
    cell = nbformat.v4.new_code_cell("chart")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"application/vnd.vegalite.v6+json": spec, "text/plain": "c"}),
        nbformat.v4.new_output("display_data", data={WIDGET_VIEW: {"model_id": "x"}, "text/plain": "w"}),
    ]
    nb.cells = [cell]
    _vega_outputs_to_fragments(nb)
    first = cell.outputs[0]["data"]
    assert set(first) == {"text/html", "text/plain"} and 'data-evx-kind="chart"' in first["text/html"]
    assert unpack(fragment_data(first["text/html"])["charts"])[0]["mark"] == "point"
    assert WIDGET_VIEW in cell.outputs[1]["data"]  # widgets are replaced in the kernel, not here


def test_index_keeps_earlier_pages_whose_notebook_still_exists(tmp_path):
    from widgets.site import Page, earlier_pages, write_index

    folder, out = tmp_path / "nbs", tmp_path / "site"
    folder.mkdir()
    out.mkdir()
    for stem, heading in [("01-a", "First"), ("02-b", "Second")]:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {heading}\n\nWhat {stem} does.")]
        nbformat.write(nb, folder / f"{stem}.ipynb")
    for stem in ["01-a", "02-b", "03-gone"]:  # 03-gone: a page whose notebook was renamed away
        (out / f"{stem}.html").write_text("<html></html>")
    built = [Page("02-b.ipynb", out / "02-b.html", "Second", "What 02-b does.", 1.0, False)]
    kept = earlier_pages(out, built, [folder / "02-b.ipynb"])
    assert [p.path.name for p in kept] == ["01-a.html"] and kept[0].title == "First"
    index = write_index(built + kept, out / "index.html").read_text()
    assert index.index('href="01-a.html"') < index.index('href="02-b.html"') and "03-gone" not in index
    assert (out / "03-gone.html").is_file()  # left on disk, only unlisted
