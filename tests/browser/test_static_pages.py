"""Pages built by `make site`, opened from disk in headless Debian Chromium: no kernel, no network.

The notebooks' pages are built with widgets.site (executed notebooks are reused from
build/.executed when current). In each page a user moves the scrubber's slider: the highlighted
token, the chart's rule and the shown message must all change, every chart on the page must be
drawn, and the page must not ask the network for anything. A second test drives the parts the
notebooks' pages do not exercise (layer switch, play, the atlas's layer slider) on a page made
from synthetic widgets, with no model.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update"]
PAGES = ["01-quickstart", "05-your-own-episode"]
SCRUBBER = "[data-evx-kind=scrubber]"
RULE = "g.mark-rule line[stroke='#111'], g.mark-rule path[stroke='#111']"

# what a user sees of a scrubber: highlighted token, the rule's drawn position, the message line
SEEN = f"""
(root) => {{
  const box = document.querySelector(root);
  const rule = box.querySelector("{RULE}");
  const current = box.querySelector('.evx-token.evx-current');
  return {{
    current: current ? Number(current.dataset.i) : null,
    rule: rule ? ['transform', 'x2', 'd'].map((a) => rule.getAttribute(a) || '').join('|') : null,
    where: box.querySelector('.evx-s-where').textContent,
    slider: Number(box.querySelector('.evx-s-position').value),
  }};
}}
"""


def _browser(p):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not installed ({CHROMIUM} missing): run `make browser`")
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def _open(browser, path: Path):
    """A page from disk, with every request that is not for a file refused and recorded."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    errors, network = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def refuse(route):
        if route.request.url.startswith("file:"):
            return route.continue_()
        network.append(route.request.url)
        return route.abort()

    page.route("**/*", refuse)
    page.goto(path.as_uri())
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-evx-kind]')].every(e => e.dataset.evxReady)", timeout=120_000
    )
    return page, errors, network


def _scrub(page, root: str = SCRUBBER) -> tuple[dict, dict]:
    """Five key presses on the slider, as a user scrubs; what was seen before and after."""
    page.locator(root).first.scroll_into_view_if_needed()
    before = page.evaluate(SEEN, root)
    page.locator(f"{root} .evx-s-position").first.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        f"([root, old]) => {{ const s = ({SEEN})(root); return s.current === old + 5 && s.rule !== null; }}",
        arg=[root, before["current"]],
        timeout=20_000,
    )
    page.wait_for_timeout(300)  # Vega redraws asynchronously
    return before, page.evaluate(SEEN, root)


@pytest.fixture(scope="module")
def site_pages(tmp_path_factory) -> dict[str, Path]:
    from widgets.site import build

    out = tmp_path_factory.mktemp("site")
    pages = build([ROOT / "notebooks" / f"{name}.ipynb" for name in PAGES], out, cache=BUILD / ".executed")
    for page in pages:
        print(f"{page.notebook}: {page.size_mb:.1f} MB", file=sys.stderr)
    return {p.path.stem: p.path for p in pages}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("name", PAGES)
def test_site_page_scrubs_without_kernel_or_network(site_pages, name):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page, errors, network = _open(browser, site_pages[name])
            kinds = page.evaluate("() => [...document.querySelectorAll('[data-evx-kind]')].map(e => e.dataset.evxKind)")
            assert "scrubber" in kinds, kinds
            drawn = page.evaluate(
                "() => [...document.querySelectorAll('[data-evx-kind]')].map(e => [e.dataset.evxReady,"
                " [...e.querySelectorAll('.evx-vega')].every(v => v.querySelector('svg, canvas'))])"
            )
            assert all(ready == "1" and charts for ready, charts in drawn), drawn
            assert page.locator(f"{SCRUBBER} .evx-token").count() > 100

            before, after = _scrub(page)
            assert after["current"] == before["current"] + 5 == after["slider"]
            assert after["rule"] != before["rule"], "the chart's rule did not move"
            assert after["where"] != before["where"] and f"token {after['current']}" in after["where"]

            page.locator(f"{SCRUBBER} .evx-s-next").first.click()  # the next message's first token
            page.wait_for_function(f"(old) => ({SEEN})('{SCRUBBER}').current > old", arg=after["current"])
            page.locator(SCRUBBER).first.screenshot(path=str(BUILD / f"static-{name}.png"))
            assert not errors, errors[:3]
            assert not network, f"the page asked the network for {network[:3]}"
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.slow
def test_synthetic_page_switches_layers_plays_and_moves_the_atlas(tmp_path):
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from unit.test_widgets import NORMS, make_trace, make_vectors

    from widgets import EmotionAtlas, EpisodeScrubber
    from widgets.site import render_page
    from widgets.static import static_html

    scrubber = EpisodeScrubber(make_trace(), emotions=["desperate", "calm"], layer=2)
    atlas = EmotionAtlas(make_vectors(n_layers=4), norms=NORMS, layer=1)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("shown")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": static_html(w), "text/plain": ""})
        for w in (scrubber, atlas)
    ]
    nb.cells = [cell]
    path = tmp_path / "synthetic.html"
    path.write_text(render_page(nb, "synthetic"), encoding="utf-8")

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page, errors, network = _open(browser, path)
            titles = (
                "() => [...document.querySelectorAll('[data-evx-kind=scrubber] .role-axis-title text')]"
                ".map(t => t.textContent).join(' ')"
            )
            assert "layer 2" in page.evaluate(titles) and "layer 4" not in page.evaluate(titles)
            page.locator(f"{SCRUBBER} .evx-s-layer").select_option("4")
            page.wait_for_function(f"() => ({titles})().includes('layer 4')", timeout=20_000)
            legend = page.locator(".evx-legend-title").first.inner_text()
            assert "layer 4" in legend  # the transcript recoloured for the same layer

            start = page.evaluate(SEEN, SCRUBBER)["current"]
            page.locator(f"{SCRUBBER} .evx-s-play").click()
            page.wait_for_function(f"() => ({SEEN})('{SCRUBBER}').current >= {start + 3}", timeout=20_000)
            page.locator(f"{SCRUBBER} .evx-s-play").click()  # pause

            atlas_root = "[data-evx-kind=layers]"
            cosine = f"() => document.querySelectorAll('{atlas_root} .evx-vega')[2].textContent"
            first = page.evaluate(cosine)
            assert "layer 1" in first
            page.locator(f"{atlas_root} .evx-a-layer").focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(f"() => ({cosine})().includes('layer 2')", timeout=20_000)
            assert page.locator(f"{atlas_root} .evx-a-value").inner_text() == "2"
            assert not errors, errors[:3]
            assert not network, network[:3]
        finally:
            browser.close()
