"""The notebook UI on synthetic traces: state follows the controls, data sent once, files export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import altair as alt
import numpy as np
import pandas as pd
import pytest
import torch
import vl_convert
from scipy import stats as scipy_stats

from explorer.comparison import Comparison, LayerTest, NullTest, Trend
from explorer.episodes import parse_episode
from explorer.errors import ExplorerError
from explorer.tracing import IntensityTrace
from explorer.vectors import EmotionVectors
from widgets import CompareView, EmotionAtlas, EpisodeScrubber, TranscriptView, save_chart
from widgets.export import chart_spec
from widgets.scrubber import SMOOTHING, default_smoothing, rolling_mean, window_frame
from widgets.transcript import CSS_PATH, JS_PATH

EMOTIONS = ["desperate", "calm", "afraid"]
LAYERS = [2, 4]
SINK_Z = 600.0

MESSAGES = [
    {"role": "system", "content": "You are a careful coding assistant."},
    {"role": "user", "content": "Make the failing test pass before the deadline."},
    {"role": "assistant", "content": "I changed the loop bound to fix it.", "attempt": 1},
    {"role": "tool", "content": "FAILED test_bound expected 3 got 2", "attempt": 1, "outcome": "fail"},
    {"role": "assistant", "content": "Now the index starts at one instead.", "attempt": 2},
    {"role": "tool", "content": "FAILED test_bound expected 3 got 4", "attempt": 2, "outcome": "fail"},
    {"role": "assistant", "content": "Both edges are handled this time.", "attempt": 3},
    {"role": "tool", "content": "PASSED all tests", "attempt": 3, "outcome": "pass"},
]


def make_trace(seed: int = 0, messages=MESSAGES, repeat: int = 1, episode_id: str = "synthetic") -> IntensityTrace:
    """A trace whose token table is what ``render`` would produce for a plain template: a header
    token per message (outside the content) then one token per word."""
    episode = parse_episode({"id": episode_id, "title": "Synthetic episode", "messages": messages})
    rows, text, index = [], "", 0
    for m, message in enumerate(episode.messages):
        words = [f"{message.role.title()}:"] + (message.content.split() * repeat)
        for w, word in enumerate(words):
            piece = word if w == 0 else " " + word
            start = len(text)
            text += piece
            rows.append(
                {
                    "token_index": index,
                    "message_index": m,
                    "role": message.role,
                    "attempt": message.attempt,
                    "outcome": message.outcome,
                    "token": piece,
                    "start": start,
                    "end": len(text),
                    "in_content": w > 0,
                }
            )
            index += 1
        text += "\n\n"
    tokens = pd.DataFrame(rows)
    tokens["attempt"] = tokens["attempt"].astype("Int64")
    tokens.attrs["n_layers"] = 6  # default layer round(2 * 6 / 3) = 4, which is traced
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(len(tokens), len(EMOTIONS), len(LAYERS))).astype(np.float32)
    z[0] = SINK_Z  # the attention sink
    raw = (z * 0.1 + 2.0).astype(np.float32)
    return IntensityTrace(
        episode=episode,
        model_name="synthetic-model",
        emotions=list(EMOTIONS),
        layers=list(LAYERS),
        tokens=tokens,
        raw=raw,
        z=z,
        text=text,
    )


@pytest.fixture(scope="module")
def trace() -> IntensityTrace:
    return make_trace()


@pytest.fixture()
def scrubber(trace) -> EpisodeScrubber:
    return EpisodeScrubber(trace, emotions=["desperate", "calm"], layer=2)


def lines_dataset(chart: alt.JupyterChart) -> list[dict]:
    """The rows of the trend chart's line data (token_index and one [content, all] pair per emotion)."""
    datasets = chart.spec["datasets"]
    found = [rows for rows in datasets.values() if rows and {"token_index", "e0"} <= set(rows[0])]
    assert len(found) == 1
    return found[0]


def dataset_with(chart: alt.JupyterChart, *columns: str) -> list[dict]:
    found = [rows for rows in chart.spec["datasets"].values() if rows and set(columns) <= set(rows[0])]
    assert len(found) == 1, [list(rows[0]) for rows in chart.spec["datasets"].values() if rows]
    return found[0]


def trend_layers(chart: alt.JupyterChart) -> list[dict]:
    return chart.spec["vconcat"][0]["layer"]


def panel_layers(chart: alt.JupyterChart) -> list[dict]:
    """The turn panel's layers, nested layers flattened."""
    out, todo = [], list(chart.spec["vconcat"][1]["layer"])
    while todo:
        layer = todo.pop(0)
        todo[:0] = layer.get("layer", [])
        if "mark" in layer:
            out.append(layer)
    return out


def interval_layer(chart: alt.JupyterChart) -> dict:
    """The turn panel's boxes (each turn's 95% interval)."""
    layers = [layer for layer in panel_layers(chart) if layer["mark"]["type"] == "rect" and "y2" in layer["encoding"]]
    assert len(layers) == 1
    return layers[0]


def line_layer(chart: alt.JupyterChart) -> dict:
    layers = [layer for layer in trend_layers(chart) if layer["mark"]["type"] == "line"]
    assert len(layers) == 1
    return layers[0]


def shown_value(trace: IntensityTrace, position: int, emotion: int, layer: int):
    """What the scrubber reports for a token: its z, or None on a template token or the sink."""
    if not trace.content_mask()[position]:
        return None
    return round(float(trace.z[position, emotion, layer]), 3)


# --- EpisodeScrubber --------------------------------------------------------------------------
def test_slider_moves_the_transcript_and_the_chart_rule_without_rebuilding(scrubber, trace):
    spec_before = scrubber.chart.chart
    for position in (7, 0, 23, len(trace.tokens) - 1):
        scrubber.slider.value = position
        assert scrubber.transcript.position == position
        assert scrubber.chart.params.position == position
        assert scrubber.chart._params["position"] == position  # the synced copy the browser gets
        state = scrubber.state()
        row = trace.tokens.iloc[position]
        assert state["position"] == position
        assert state["token"] == row["token"]
        assert state["message_index"] == row["message_index"]
        assert state["attempt"] == (None if pd.isna(row["attempt"]) else int(row["attempt"]))
        assert state["rule_position"] == position
        assert state["value"] == shown_value(trace, position, 0, 0)
    assert scrubber.state()["value"] is not None  # the last token carries text
    assert scrubber.chart.chart is spec_before


def test_state_is_a_plain_snapshot(scrubber, trace):
    scrubber.slider.value = 9
    state = scrubber.state()
    assert json.loads(json.dumps(state)) == state
    turn = trace.turn_means("desperate", 2).loc[1, "mean"]
    assert state == {
        "position": 9,
        "token": trace.tokens["token"].iloc[9],
        "message_index": 1,
        "role": "user",
        "attempt": None,
        "emotion": "desperate",
        "layer": 2,
        "value": round(float(trace.z[9, 0, 0]), 3),
        "turn_mean": round(float(turn), 4),
        "smooth": 16,
        "include_template": False,
        "rule_position": 9,
    }


def test_scrubber_opens_on_the_first_content_token_not_the_sink(scrubber, trace):
    assert trace.z[0, 0, 0] == SINK_Z and not trace.content_mask()[0]
    assert scrubber.position == 1 == scrubber.transcript.position == scrubber.chart.params.position
    assert "600" not in scrubber.where.value
    assert scrubber.where.value.startswith("token 1 · message 1/8 · system")
    scrubber.slider.value = 0
    assert scrubber.state()["value"] is None
    assert "template token, left out" in scrubber.where.value


def test_clicking_a_token_in_the_transcript_moves_the_slider(scrubber):
    scrubber.transcript.position = 12  # what the front end sends on a click
    assert scrubber.slider.value == 12
    assert scrubber.chart.params.position == 12


def test_turn_stepper_jumps_to_first_tokens_of_messages(scrubber, trace):
    starts = trace.tokens.groupby("message_index")["token_index"].min().tolist()
    scrubber.slider.value = 0
    scrubber.next_button.click()
    assert scrubber.slider.value == starts[1]
    scrubber.next_button.click()
    assert scrubber.slider.value == starts[2]
    scrubber.slider.value = starts[4] + 3  # inside message 4
    scrubber.prev_button.click()
    assert scrubber.slider.value == starts[3]
    scrubber.slider.value = starts[-1] + 1
    scrubber.next_button.click()  # nothing after the last message
    assert scrubber.slider.value == starts[-1] + 1
    scrubber.slider.value = 1
    scrubber.prev_button.click()  # nothing before the first
    assert scrubber.slider.value == 1
    assert scrubber.transcript.position == 1


def test_emotion_switch_updates_transcript_and_chart_highlight_only(scrubber, trace):
    scrubber.slider.value = 5
    values_before = scrubber.transcript.values
    chart_before = scrubber.chart.chart
    scrubber.emotion_dropdown.value = "calm"
    assert scrubber.transcript.emotion == "calm"
    assert scrubber.chart.params.emotion == "calm"
    assert scrubber.chart._params["emotion"] == "calm"
    assert scrubber.transcript.values is values_before  # no data recomputed or resent
    assert scrubber.chart.chart is chart_before
    assert scrubber.state()["value"] == pytest.approx(round(float(trace.z[5, 1, 0]), 3))
    # the line layer's width and the turn panel's rows follow the 'emotion' param in the browser
    stroke = line_layer(scrubber.chart)["encoding"]["strokeWidth"]
    assert stroke["condition"]["test"] == "datum.emotion === emotion"
    rects = interval_layer(scrubber.chart)
    assert "datum.emotion === emotion" in rects["transform"][0]["filter"]
    assert {p["name"] for p in scrubber.chart.spec["params"]} == {"position", "emotion", "include", "smooth"}


def test_layer_switch_rebuilds_chart_data_and_keeps_the_rule(scrubber, trace):
    scrubber.slider.value = 11
    scrubber.emotion_dropdown.value = "calm"
    scrubber.chart.params.smooth = 32  # as if chosen in the chart's menu
    before = lines_dataset(scrubber.chart)
    scrubber.layer_dropdown.value = 4
    assert scrubber.transcript.layer == 4
    after = lines_dataset(scrubber.chart)
    assert before != after
    calm = np.array([r["e1"][1] for r in after], dtype=float)  # all tokens
    assert calm == pytest.approx(np.round(trace.z[:, 1, 1].astype(float), 3), abs=1e-9)
    content = np.array([np.nan if r["e1"][0] is None else r["e1"][0] for r in after], dtype=float)
    assert np.isnan(content[~trace.content_mask()]).all()
    assert content[trace.content_mask()] == pytest.approx(calm[trace.content_mask()])
    assert line_layer(scrubber.chart)["encoding"]["y"]["title"] == "z at layer 4"
    assert scrubber.chart.params.position == 11  # rebuilt chart starts at the current token
    assert scrubber.chart.params.emotion == "calm"
    assert scrubber.chart.params.smooth == 32
    assert scrubber.state()["value"] == pytest.approx(round(float(trace.z[11, 1, 1]), 3))


def test_data_sent_to_the_browser_has_the_expected_sizes(scrubber, trace):
    view = scrubber.transcript
    n = len(trace.tokens)
    assert len(view.tokens) == n
    assert [t["text"] for t in view.tokens] == trace.tokens["token"].tolist()
    first_answer = int(trace.tokens.loc[trace.tokens["message_index"] == 2, "token_index"].min()) + 1
    assert view.tokens[first_answer] == {
        "text": trace.tokens["token"].iloc[first_answer],
        "message_index": 2,
        "role": "assistant",
        "attempt": 1,
        "in_content": True,
    }
    assert [t["in_content"] for t in view.tokens] == trace.content_mask().tolist()
    assert len(view.messages) == len(MESSAGES)
    assert [m["outcome"] for m in view.messages] == [m.get("outcome") for m in MESSAGES]
    assert view.emotions == ["desperate", "calm"]
    assert set(view.values) == {"desperate", "calm"}
    for emotion in view.values:
        assert set(view.values[emotion]) == {"2", "4"}
        assert all(len(v) == n for v in view.values[emotion].values())
    j = trace.emotions.index("calm")
    expected = np.round(trace.z[:, j, 1].astype(float), 3).tolist()
    assert view.values["calm"]["4"] == expected
    assert all(v == round(v, 3) for v in view.values["desperate"]["2"])
    # the JSON payload is numbers, not float32 noise like 0.12300000339746475
    assert max(len(str(v)) for v in view.values["calm"]["4"]) <= len("-10.123")


def test_sink_and_template_tokens_are_left_out_of_the_scale_until_included(scrubber, trace):
    content = trace.content_mask()
    expected = round(float(np.percentile(np.abs(trace.z[content][:, :2, :]), 99)), 3)
    everything = round(float(np.percentile(np.abs(trace.z[:, :2, :]), 99)), 3)
    assert scrubber.transcript.scale == pytest.approx(expected)
    assert 1.0 < scrubber.transcript.scale < 10.0  # the sink would make it hundreds
    assert scrubber.transcript.scale_all == pytest.approx(everything)
    assert everything > 10 * expected  # the sink's 600 sets the limit once it is included
    # the chart's y limits: per window, without and with template tokens
    limits = scrubber.axis_limits(2)
    assert limits[1][0] == pytest.approx(round(float(np.percentile(np.abs(trace.z[content][:, :2, 0]), 99)), 3))
    assert limits[1][1] > 10 * limits[1][0]
    domain = line_layer(scrubber.chart)["encoding"]["y"]["scale"]["domain"]["expr"]
    assert json.dumps([list(limits[w]) for w in SMOOTHING]) in domain and "include ? 1 : 0" in domain
    assert line_layer(scrubber.chart)["encoding"]["y"]["scale"]["clamp"] is True
    # the numbers: the read-out, the turn mean, and the transcript's colours
    scrubber.slider.value = 0
    assert scrubber.state()["value"] is None
    left_out = scrubber.state()["turn_mean"]
    scrubber.include_box.value = True
    assert scrubber.transcript.include_template is True
    assert scrubber.chart.params.include == 1
    state = scrubber.state()
    assert state["value"] == SINK_Z and state["include_template"] is True
    with_sink = trace.turn_means("desperate", 2, include_template=True).loc[0, "mean"]
    assert state["turn_mean"] == pytest.approx(with_sink, abs=1e-4) and with_sink > left_out + 50
    assert "+600.00" in scrubber.where.value


def test_chart_layers_attempt_bands_and_outcome_markers(scrubber, trace):
    datasets = list(scrubber.chart.spec["datasets"].values())
    bands = next(rows for rows in datasets if rows and "label" in rows[0])
    tokens = trace.tokens
    assert [b["attempt"] for b in bands] == [1, 2, 3]
    for band in bands:
        span = tokens.loc[tokens["attempt"] == band["attempt"], "token_index"]
        assert (band["start"], band["end"]) == (span.min(), span.max() + 1)
    assert bands[0]["fill"] != bands[1]["fill"]
    markers = next(rows for rows in datasets if rows and "outcome" in rows[0] and "token_index" in rows[0])
    starts = tokens.groupby("message_index")["token_index"].min()
    assert [(m["token_index"], m["outcome"]) for m in markers] == [
        (starts[3], "fail"),
        (starts[5], "fail"),
        (starts[7], "pass"),
    ]
    colour = next(layer for layer in trend_layers(scrubber.chart) if layer["mark"]["type"] == "point")
    assert colour["encoding"]["color"]["scale"]["domain"] == ["fail", "pass"]


# --- smoothing --------------------------------------------------------------------------------
def test_smoothing_is_a_window_transform_per_offered_width_picked_by_a_bound_menu(scrubber):
    spec = scrubber.chart.spec
    smooth = next(p for p in spec["params"] if p["name"] == "smooth")
    assert smooth["bind"]["input"] == "select" and smooth["bind"]["options"] == list(SMOOTHING)
    assert smooth["value"] == default_smoothing(scrubber.trace) == 16  # turns here are 7 to 10 tokens
    windows = [t for t in line_layer(scrubber.chart)["transform"] if "window" in t]
    assert [w["window"][0]["as"] for w in windows] == [f"s{w}" for w in SMOOTHING[1:]]
    for transform, width in zip(windows, SMOOTHING[1:]):
        assert transform["window"][0] == {"op": "mean", "field": "z", "as": f"s{width}"}
        assert transform["frame"] == [-(width // 2), width - 1 - width // 2]
        assert transform["groupby"] == ["emotion"] and transform["sort"] == [{"field": "token_index"}]
    picked = line_layer(scrubber.chart)["transform"][-1]["calculate"]
    assert picked.startswith("[datum.z, datum.s8, datum.s16") and "indexof" in picked and "smooth" in picked


def test_rolling_mean_skips_missing_values_over_a_centred_frame():
    values = np.array([1.0, np.nan, 3.0, 5.0, np.nan, np.nan, np.nan, 7.0])
    before, after = window_frame(4, 1)
    assert (before, after) == (2, 1)
    got = rolling_mean(values, before, after)
    expected = [1.0, 2.0, 3.0, 4.0, 4.0, 5.0, 7.0, 7.0]
    assert got == pytest.approx(expected)
    assert np.isnan(rolling_mean(np.array([np.nan, np.nan]), 0, 0)).all()
    assert window_frame(96, 3) == (16, 15)  # 96 tokens in blocks of 3: 32 rows


def _line_points(svg: str, stroke_width: str) -> list[tuple[float, float]]:
    """The (x, y) pixel vertices of the one line path drawn with ``stroke_width``."""
    paths = re.findall(r'<path[^>]*stroke-width="' + re.escape(stroke_width) + r'"[^>]*>', svg)
    paths = [p for p in paths if 'd="M' in p]
    assert len(paths) == 1, len(paths)
    d = re.search(r'd="([^"]+)"', paths[0]).group(1)
    return [(float(x), float(y)) for x, y in re.findall(r"([-\d.e]+),([-\d.e]+)", d)]


@pytest.mark.parametrize("width", [8, 32])
def test_the_browser_draws_what_the_python_mirror_of_the_smoothing_computes(width):
    # Vega (through vl-convert) evaluates the chart's own transforms; the vertices of the drawn
    # line, put back into z, must equal the mirror's rolling mean (template tokens skipped).
    trace = make_trace(seed=2, repeat=4)
    scrubber = EpisodeScrubber(trace, emotions=["calm", "afraid"], layer=4)
    scrubber.chart.params.smooth = width
    spec = chart_spec(scrubber.chart)
    svg = vl_convert.vegalite_to_svg(spec)
    points = _line_points(svg, "2.4")  # the selected emotion's line
    expected = scrubber.smoothed(4, width)[:, 0]
    limit = scrubber.axis_limits(4)[width][0]
    assert len(points) == len(expected)
    z = [limit - 2 * limit * y / 200 for _, y in points]  # y axis [-limit, limit] over 200 px
    assert z == pytest.approx(np.clip(expected, -limit, limit), abs=0.01)
    unsmoothed = scrubber.smoothed(4, 1)[:, 0]
    assert np.nanmax(np.abs(expected - np.where(np.isnan(unsmoothed), 0, unsmoothed))) > 0.2  # it did smooth


def test_default_smoothing_is_about_one_turn_within_16_to_128_tokens():
    assert default_smoothing(make_trace()) == 16
    assert default_smoothing(make_trace(repeat=8)) == 32  # median message 49 tokens
    assert default_smoothing(make_trace(repeat=12)) == 64  # median message 73 tokens
    assert default_smoothing(make_trace(repeat=40)) == 128  # median message 241 tokens: capped
    with pytest.raises(ExplorerError, match="smooth=50; choose one of 1, 8, 16"):
        EpisodeScrubber(make_trace(), smooth=50)


# --- the turn panel and the difference line -------------------------------------------------------
def test_turn_panel_shows_the_engine_turn_means_and_highlights_the_current_turn(scrubber, trace):
    rows = dataset_with(scrubber.chart, "ci_low", "role", "included")
    for emotion in ("desperate", "calm"):
        for included in (0, 1):
            engine = trace.turn_means(emotion, 2, include_template=bool(included))
            mine = [r for r in rows if r["emotion"] == emotion and r["included"] == included]
            assert [r["message"] for r in mine] == engine.index.tolist()
            assert [r["mean"] for r in mine] == pytest.approx(engine["mean"].to_numpy(), abs=1e-4)
            assert [r["ci_high"] for r in mine] == pytest.approx(engine["ci_high"].to_numpy(), abs=1e-4)
            assert [r["role"] for r in mine] == [m["role"] for m in MESSAGES]
    # an assistant turn's mean is its attempt's mean, computed here without the engine
    direct = direct_attempt_means(trace, "desperate", 2)
    assistant = [r for r in rows if r["emotion"] == "desperate" and r["included"] == 0 and r["role"] == "assistant"]
    assert [r["mean"] for r in assistant] == pytest.approx(direct.to_numpy(), abs=1e-4)
    # the interval: Student's t over the turn's content tokens
    tokens = trace.tokens[(trace.tokens["message_index"] == 4) & trace.content_mask()]
    values = trace.z[tokens.index, 0, 0].astype(float)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    turn = next(r for r in assistant if r["message"] == 4)
    assert (turn["ci_low"], turn["ci_high"]) == pytest.approx((low, high), abs=1e-4)
    rects = interval_layer(scrubber.chart)
    assert rects["encoding"]["opacity"]["condition"]["test"] == "datum.start <= position && position < datum.end"
    assert rects["encoding"]["color"]["scale"]["domain"] == ["system", "user", "tool", "assistant"]
    assert "differences" not in scrubber.chart.spec["datasets"]  # no control, no difference line


def test_difference_line_is_episode_minus_control_per_attempt_on_the_same_words(trace):
    control = make_trace(seed=11, episode_id="synthetic-control")
    scrubber = EpisodeScrubber(trace, emotions=["desperate", "calm"], layer=4, control=control)
    rows = dataset_with(scrubber.chart, "difference", "attempt")
    for emotion in ("desperate", "calm"):
        expected = direct_attempt_means(trace, emotion, 4) - direct_attempt_means(control, emotion, 4)
        mine = [r for r in rows if r["emotion"] == emotion]
        assert [r["attempt"] for r in mine] == [1, 2, 3]
        assert [r["difference"] for r in mine] == pytest.approx(expected.to_numpy(), abs=1e-4)
    tokens = trace.tokens
    answer = tokens.loc[(tokens["role"] == "assistant") & (tokens["attempt"] == 2), "token_index"]
    assert rows[1]["token_index"] == pytest.approx((answer.min() + answer.max() + 1) / 2)
    line = next(layer for layer in panel_layers(scrubber.chart) if layer["data"] == {"name": "differences"})
    assert line["mark"]["type"] == "line" and line["encoding"]["y"]["field"] == "difference"
    assert line["transform"][0] == {"filter": "datum.emotion === emotion"}
    with pytest.raises(ExplorerError, match="traced with 'other-model'"):
        other = make_trace(seed=1)
        other.model_name = "other-model"
        EpisodeScrubber(trace, control=other)


def test_long_traces_are_averaged_into_blocks_under_the_row_limit():
    long = make_trace(seed=3, repeat=200)  # about 10,000 tokens
    n = len(long.tokens)
    scrubber = EpisodeScrubber(long, emotions=EMOTIONS)
    rows = lines_dataset(scrubber.chart)
    assert len(rows) <= 4500
    assert all(len(d) < 5000 for d in scrubber.chart.spec["datasets"].values())
    k = int(np.ceil(n / 4500))
    assert scrubber.block_size() == k > 1
    assert rows[1]["token_index"] == k
    j = LAYERS.index(long.default_layer)
    block = long.z[k : 2 * k, 2, j].astype(float)
    keep = long.content_mask()[k : 2 * k]
    assert rows[1]["e2"] == pytest.approx([block[keep].mean(), block.mean()], abs=1e-3)
    assert "blocks of 3 tokens" in line_layer(scrubber.chart)["encoding"]["y"]["title"]
    windows = [t for t in line_layer(scrubber.chart)["transform"] if "window" in t]
    assert windows[-1]["frame"] == [-window_frame(256, k)[0], window_frame(256, k)[1]]


def test_unknown_emotion_or_layer_is_refused(trace):
    with pytest.raises(ExplorerError, match="'joyful' was not traced"):
        EpisodeScrubber(trace, emotions=["joyful"])
    with pytest.raises(ExplorerError, match="layer 3 was not traced"):
        EpisodeScrubber(trace, layer=3)


def test_transcript_front_end_is_local_files_only():
    view = TranscriptView()
    assert "divergingColour" in view._esm and ".evx-token" in view._css
    source = JS_PATH.read_text()
    assert not re.search(r"^\s*import\s", source, re.M)
    assert "http" not in source and "http" not in CSS_PATH.read_text()


# --- files ------------------------------------------------------------------------------------
def test_save_html_is_standalone_and_carries_tokens(scrubber, trace, tmp_path):
    scrubber.slider.value = 14
    scrubber.chart.params.smooth = 64
    path = scrubber.save_html(tmp_path / "episode.html")
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=[\"']https?:", page)
    assert "<svg" in page and "evx-token" in page
    assert "window.vegaEmbed=" in page  # Vega itself is inline: the charts draw with no network
    data = json.loads(re.search(r'<script type="application/json" id="evx-data">(.*?)</script>', page, re.S).group(1))
    assert [t["text"] for t in data["widget"]["tokens"]] == trace.tokens["token"].tolist()
    assert data["widget"]["position"] == 14
    assert data["widget"]["include_template"] is False and data["widget"]["scale_all"] > data["widget"]["scale"]
    assert data["chart_layer"] == 2 and len(data["turns"]) == 2 * 2 * len(MESSAGES)
    for word in ("careful", "deadline", "PASSED"):
        assert word in page
    spec = json.loads(re.search(r'<script type="application/json" id="evx-spec">(.*?)</script>', page, re.S).group(1))
    assert spec["params"][0] == {"name": "position", "value": 14}
    assert next(p for p in spec["params"] if p["name"] == "smooth")["value"] == 64
    assert 'id="evx-include"' in page


def test_script_tags_in_token_text_cannot_break_the_page(tmp_path):
    messages = [dict(m) for m in MESSAGES]
    messages[2]["content"] = "</script><script>alert(1)</script> done"
    scrubber = EpisodeScrubber(make_trace(messages=messages), emotions=["calm"])
    page = scrubber.save_html(tmp_path / "x.html").read_text()
    assert "</script><script>alert(1)" not in page
    assert page.count("</script>") == 5  # data, spec, transcript, Vega, chart


def test_to_csv_writes_the_readouts_at_the_shown_layer(scrubber, trace, tmp_path):
    scrubber.layer_dropdown.value = 4
    frame = pd.read_csv(scrubber.to_csv(tmp_path / "readouts.csv"))
    assert list(frame.columns) == ["token_index", "message_index", "role", "attempt", "token", *EMOTIONS]
    assert len(frame) == len(trace.tokens)
    assert frame["afraid"].to_numpy() == pytest.approx(trace.z[:, 2, 1], rel=1e-4)


def test_save_chart_writes_png_and_svg(scrubber, tmp_path):
    png = save_chart(scrubber.chart, tmp_path / "chart.png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    svg = save_chart(scrubber.chart.chart, tmp_path / "chart.svg").read_text()
    assert svg.lstrip().startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "attempt 2" in svg
    with pytest.raises(ExplorerError, match="use .png or .svg"):
        save_chart(scrubber.chart, tmp_path / "chart.pdf")


# --- the front end, run in node against a minimal DOM ------------------------------------------
FAKE_DOM = r"""
const fs = require("fs");
class ClassList {
  constructor(el) { this.el = el; }
  items() { return (this.el.className || "").split(/\s+/).filter(Boolean); }
  contains(c) { return this.items().includes(c); }
  add(c) { if (!this.contains(c)) this.el.className = [...this.items(), c].join(" "); }
  remove(c) { this.el.className = this.items().filter((x) => x !== c).join(" "); }
  toggle(c, force) { const on = force === undefined ? !this.contains(c) : !!force; on ? this.add(c) : this.remove(c); }
}
class El {
  constructor(tag) {
    this.tagName = tag; this.children = []; this.className = ""; this.style = {}; this.dataset = {};
    this.text = ""; this.listeners = {}; this.parent = null; this.value = ""; this.scrollTop = 0;
    this.classList = new ClassList(this);
  }
  append(...nodes) { for (const n of nodes) { n.parent = this; this.children.push(n); } }
  replaceChildren(...nodes) { this.children = []; this.append(...nodes); }
  set textContent(t) { this.children = []; this.text = String(t); }
  get textContent() { return this.text + this.children.map((c) => c.textContent).join(""); }
  addEventListener(name, fn) { (this.listeners[name] = this.listeners[name] || []).push(fn); }
  fire(name, event) { (this.listeners[name] || []).forEach((fn) => fn(event || { target: this })); }
  closest(selector) {
    for (let e = this; e; e = e.parent) if (e.classList.contains(selector.slice(1))) return e;
    return null;
  }
  getBoundingClientRect() { return { top: 0, bottom: 10, height: 10 }; }
  all(cls) {
    const out = [];
    const walk = (e) => { if (e.classList.contains(cls)) out.push(e); e.children.forEach(walk); };
    walk(this);
    return out;
  }
}
const page = fs.readFileSync(process.argv[2], "utf8");
const byId = {};
const data = page.match(/<script type="application\/json" id="evx-data">([\s\S]*?)<\/script>/)[1];
const ids = ["evx-position", "evx-where", "evx-emotion", "evx-layer", "evx-include", "evx-prev", "evx-next",
  "evx-transcript"];
for (const id of ids) byId[id] = new El("div");
byId["evx-data"] = new El("script"); byId["evx-data"].textContent = data;
const document = { createElement: (tag) => new El(tag), getElementById: (id) => byId[id] };
const code = page.match(/<script>([\s\S]*?)<\/script>/)[1];
const window = {};
new Function("document", "requestAnimationFrame", "window", code)(document, (fn) => fn(), window);
const root = byId["evx-transcript"];
const spans = () => root.all("evx-token");
const current = () => spans().findIndex((s) => s.classList.contains("evx-current"));
const colours = () => spans().map((s) => s.style.backgroundColor);
const badges = root.all("evx-badge").map((b) => b.textContent);
const out = { n: spans().length, bubbles: root.all("evx-bubble").length, badges };
out.start = current(); out.colours = colours();
const slider = byId["evx-position"]; slider.value = "7"; slider.fire("input");
out.afterSlide = current(); out.where = byId["evx-where"].textContent;
const emotion = byId["evx-emotion"]; emotion.value = "calm"; emotion.fire("change"); out.calm = colours();
const layer = byId["evx-layer"]; layer.value = "4"; layer.fire("change"); out.calm4 = colours();
byId["evx-next"].fire("click"); out.afterNext = current();
const scroller = root.all("evx-scroll")[0];
scroller.fire("click", { target: spans()[20] }); out.afterClick = current();
scroller.fire("mouseover", { target: spans()[Number(process.argv[3])], clientX: 5, clientY: 5 });
out.tip = root.all("evx-tip")[0].textContent;
out.legend = root.all("evx-legend")[0].textContent;
const include = byId["evx-include"]; include.checked = true; include.fire("change");
out.included = colours(); out.legendIncluded = root.all("evx-legend")[0].textContent;
slider.value = "0"; slider.fire("input"); out.whereSink = byId["evx-where"].textContent;
console.log(JSON.stringify(out));
"""


def expected_colour(value: float, scale: float) -> str:
    t = max(-1.0, min(1.0, value / scale))
    end = (33, 102, 172) if t < 0 else (178, 24, 43)
    mixed = [round(255 + (c - 255) * abs(t) + 1e-9) for c in end]
    return f"rgb({mixed[0]}, {mixed[1]}, {mixed[2]})"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the front end")
def test_front_end_recolours_and_highlights_from_data_it_already_has(trace, tmp_path):
    scrubber = EpisodeScrubber(trace, emotions=["desperate", "calm"], layer=2)
    page = scrubber.save_html(tmp_path / "page.html")
    harness = tmp_path / "harness.js"
    harness.write_text(FAKE_DOM)
    hover = int(trace.tokens.loc[trace.tokens["message_index"] == 2, "token_index"].min()) + 1
    run = subprocess.run(["node", str(harness), str(page), str(hover)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    n, scale, scale_all = len(trace.tokens), scrubber.transcript.scale, scrubber.transcript.scale_all
    content = trace.content_mask()
    assert (out["n"], out["bubbles"], out["badges"]) == (n, len(MESSAGES), ["fail", "fail", "pass"])
    assert out["start"] == 1 and out["afterSlide"] == 7 and out["afterClick"] == 20  # opens past the sink
    starts = trace.tokens.groupby("message_index")["token_index"].min().tolist()
    assert out["afterNext"] == starts[int(trace.tokens["message_index"].iloc[7]) + 1]
    desperate = [round(float(v), 3) for v in trace.z[:, 0, 0]]
    calm4 = [round(float(v), 3) for v in trace.z[:, 1, 1]]

    def shown(values, limit, everything=False):
        return [expected_colour(v, limit) if everything or keep else "transparent" for v, keep in zip(values, content)]

    assert out["colours"][0] == "transparent"  # the sink is left out, not painted
    assert out["colours"] == shown(desperate, scale)
    assert out["calm4"] == shown(calm4, scale)
    assert out["included"] == shown(calm4, scale_all, everything=True)
    assert out["included"][0] == "rgb(178, 24, 43)"  # included, the sink saturates instead of rescaling
    assert out["calm"] != out["colours"] and out["calm4"] != out["calm"]
    assert f"token 7 · message {trace.tokens['message_index'].iloc[7] + 1}/8" in out["where"]
    assert f"“·{trace.tokens['token'].iloc[hover].strip()}”" in out["tip"]  # leading space made visible
    assert f"token {hover} · assistant · attempt 1 · layer 4" in out["tip"]
    assert "desperate" in out["tip"] and "calm" in out["tip"]
    assert out["legend"].startswith("calm · layer 4") and "template tokens left out" in out["legend"]
    assert f"+{scale_all:.1f}" in out["legendIncluded"]
    assert "z = +600.00" in out["whereSink"]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to check the module")
def test_transcript_module_parses_as_an_es_module(tmp_path):
    module = tmp_path / "transcript.mjs"
    module.write_text(JS_PATH.read_text())
    probe = (
        f"import w from {json.dumps(module.as_uri())};"
        "console.log(JSON.stringify([typeof w.render, w.divergingColour(0, 2), w.divergingColour(-600, 2),"
        " w.divergingColour(1, 2), w.divergingColour(null, 2)]));"
    )
    run = subprocess.run(["node", "--input-type=module", "-e", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [
        "function",
        "rgb(255, 255, 255)",
        "rgb(33, 102, 172)",
        expected_colour(1, 2),
        "transparent",
    ]


# --- CompareView ------------------------------------------------------------------------------
def direct_attempt_means(trace: IntensityTrace, emotion: str, layer: int) -> pd.Series:
    frame = trace.tokens.copy()
    frame["z"] = trace.z[:, trace.emotions.index(emotion), trace.layers.index(layer)].astype(float)
    chosen = frame[(frame["role"] == "assistant") & frame["in_content"] & frame["attempt"].notna()]
    return chosen.groupby(chosen["attempt"].astype(int))["z"].mean()


STATS = Comparison(
    model="synthetic-model",
    episode="synthetic",
    control="synthetic-control",
    emotion="desperate",
    failed_attempts=(1, 2),
    layers=(
        LayerTest(
            emotion="desperate",
            layer=4,
            per_attempt=(),
            episode_trend=Trend(None, None),
            control_trend=Trend(None, None),
            slope_z=0.4321,
            slope_sd=0.4,
            difference_rho=1.0,
            permutation_p=0.0417,
            permutation_min_p=0.0417,
            random=NullTest(n=64, abs_slope_p95=0.2, p=0.0308, min_p=1 / 65),
            shuffled=NullTest(n=3, abs_slope_p95=0.3, p=0.25, min_p=0.25),
            rank=2,
            of=3,
            top_rises=("afraid", "desperate", "calm"),
            after_pass=None,
            permutation_p_holm=0.0417,
            mde_z=0.987,
        ),
    ),
)


def test_compare_view_per_attempt_means_equal_a_direct_computation(trace):
    control = make_trace(seed=11, episode_id="synthetic-control")
    view = CompareView(trace, control, "desperate", stats=STATS)
    assert view.layer == 4
    a, b = direct_attempt_means(trace, "desperate", 4), direct_attempt_means(control, "desperate", 4)
    assert list(view.means.index) == [1, 2, 3]
    assert view.means["episode"].to_numpy() == pytest.approx(a.to_numpy(), abs=1e-6)
    assert view.means["control"].to_numpy() == pytest.approx(b.to_numpy(), abs=1e-6)
    assert view.means["difference"].to_numpy() == pytest.approx((a - b).to_numpy(), abs=1e-6)
    rows = next(rows for rows in view.chart.spec["datasets"].values() if rows and "series" in rows[0])
    plotted = {(r["series"], r["attempt"]): r["z"] for r in rows}
    assert plotted[("difference", 2)] == pytest.approx(a[2] - b[2], abs=1e-4)
    assert len(rows) == 9
    for number in ("0.432", "0.0417", "0.0308", "0.25", "2 of 3", "≥ 0.987 z/attempt", "not shown"):
        assert number in view.table.value
    assert "Holm" not in view.table.value  # one layer: nothing to adjust


def test_compare_view_without_stats_uses_the_default_layer_and_labels(trace):
    control = make_trace(seed=5)
    view = CompareView(trace, control, "calm", labels=("pressure", "calm feedback"), layer=2)
    expected = direct_attempt_means(trace, "calm", 2) - direct_attempt_means(control, "calm", 2)
    assert list(view.means.columns) == ["pressure", "calm feedback", "difference"]
    assert view.means["difference"].to_numpy() == pytest.approx(expected.to_numpy(), abs=1e-6)
    assert "specificity" not in view.table.value
    with pytest.raises(ExplorerError, match="layer 3 was not traced"):
        CompareView(trace, control, "calm", layer=3)


# --- EmotionAtlas -----------------------------------------------------------------------------
ATLAS_EMOTIONS = ["happy", "sad", "afraid", "calm", "angry"]


def make_vectors(n_layers: int = 4, width: int = 16) -> EmotionVectors:
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(n_layers, len(ATLAS_EMOTIONS), width, generator=generator)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    k = len(ATLAS_EMOTIONS)
    return EmotionVectors(
        directions=directions,
        emotions=ATLAS_EMOTIONS,
        neutral_mean=torch.zeros(n_layers, k),
        neutral_std=torch.ones(n_layers, k),
        residual_norm=torch.ones(n_layers),
        grand_mean=torch.zeros(n_layers, width),
        metadata={"model": "synthetic-model"},
    )


NORMS = pd.DataFrame({"valence": [8.0, 2.1, 2.4, 6.9, 2.5], "arousal": [6.0, 3.5, 6.6, 1.7, 6.2]}, index=ATLAS_EMOTIONS)


def atlas_rows(chart: alt.JupyterChart, column: str) -> list[dict]:
    return next(rows for rows in chart.spec["datasets"].values() if rows and column in rows[0])


def test_atlas_layer_slider_recomputes_pca_and_cosines():
    vectors = make_vectors()
    atlas = EmotionAtlas(vectors, norms=NORMS, layer=1)
    scores, _ = vectors.pca(1)
    rows = atlas_rows(atlas.pca_chart, "pc1")
    assert {r["emotion"]: r["pc1"] for r in rows} == pytest.approx(scores["pc1"].to_dict())
    assert {r["emotion"]: r["valence"] for r in rows} == pytest.approx(NORMS["valence"].to_dict())
    atlas.layer_slider.value = 3
    scores3, explained3 = vectors.pca(3)
    rows = atlas_rows(atlas.pca_chart, "pc1")
    assert {r["emotion"]: r["pc2"] for r in rows} == pytest.approx(scores3["pc2"].to_dict())
    assert atlas.pca_chart.spec["title"]["text"].startswith("layer 3")
    cosines = atlas_rows(atlas.cosine_chart, "cosine")
    matrix = vectors.cosine_matrix(3)
    assert len(cosines) == len(ATLAS_EMOTIONS) ** 2
    for r in cosines:
        assert r["cosine"] == pytest.approx(matrix.loc[r["a"], r["b"]], abs=1e-3)
    norms_rows = atlas_rows(atlas.norms_chart, "arousal")
    assert {r["emotion"]: r["arousal"] for r in norms_rows} == NORMS["arousal"].to_dict()


def test_atlas_leaves_out_the_ratings_panel_when_norms_are_missing(monkeypatch):
    import explorer.validation

    def missing(emotions):
        raise ExplorerError("human valence/arousal norms not found")

    monkeypatch.setattr(explorer.validation, "norms_for", missing)
    atlas = EmotionAtlas(make_vectors())
    assert atlas.norms is None and atlas.norms_chart is None
    assert atlas.layer_slider.value == 3  # round(2 * 4 / 3)
    assert "valence" not in json.dumps(atlas.pca_chart.spec)


def test_widgets_package_is_not_imported_by_explorer():
    code = "import sys, explorer, explorer.stats, explorer.tracing; print('widgets' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "False", run.stderr


# --- the quickstart's scrubber on the real default model ------------------------------------------
@pytest.fixture(scope="module")
def quickstart(default_model):
    import explorer as ex

    vectors = ex.load_vectors(default_model)
    episode = ex.load_episode("impossible-code")
    trace = ex.trace(default_model, episode, vectors)
    control = ex.trace(default_model, ex.load_control(episode), vectors)
    return default_model, vectors, episode, trace, control


@pytest.mark.integration
def test_real_trace_opens_past_the_sink_and_its_turn_panel_is_the_engines(quickstart):
    _, _, _, trace, control = quickstart
    scrubber = EpisodeScrubber(trace, emotions=["desperate", "calm", "afraid"], control=control)
    layer = trace.default_layer
    sink = float(trace.z[0, trace.emotions.index("desperate"), trace.layers.index(layer)])
    assert abs(sink) > 50  # the attention sink this all guards against
    assert scrubber.position == int(np.argmax(trace.content_mask())) > 0
    first = round(float(trace.emotion("desperate", layer)[scrubber.position]), 3)
    assert f"z = {first:+.2f}" in scrubber.where.value and f"{sink:+.2f}" not in scrubber.where.value
    assert scrubber.transcript.scale < scrubber.transcript.scale_all  # template tokens widen the colour range
    assert scrubber.smooth == default_smoothing(trace) == 128  # median turn about 200 tokens
    rows = dataset_with(scrubber.chart, "ci_low", "role", "included")
    for emotion in ("desperate", "calm"):
        engine = trace.turn_means(emotion, layer)
        mine = [r for r in rows if r["emotion"] == emotion and r["included"] == 0]
        assert [r["message"] for r in mine] == list(range(len(trace.episode.messages)))
        assert [r["mean"] for r in mine] == pytest.approx(engine["mean"].to_numpy(), abs=1e-4)
        assert [r["ci_low"] for r in mine] == pytest.approx(engine["ci_low"].to_numpy(), abs=1e-4)
        # each attempt has one assistant turn: its mean is the attempt's value in the engine's test
        assistant = [r["mean"] for r in mine if r["role"] == "assistant"]
        assert assistant == pytest.approx(trace.attempt_means(emotion, layer).to_numpy(), abs=1e-4)


@pytest.mark.integration
def test_real_difference_line_is_the_per_attempt_difference_compare_tests(quickstart):
    import explorer as ex

    model, vectors, episode, trace, control = quickstart
    scrubber = EpisodeScrubber(trace, emotions=["desperate"], control=control)
    rows = dataset_with(scrubber.chart, "difference", "attempt")
    result = ex.compare(model, episode, vectors, "desperate", n_random=1, mde=False)
    expected = {a.attempt: a.difference for a in result.at(trace.default_layer).per_attempt}
    assert [r["attempt"] for r in rows] == sorted(expected) == list(range(1, 9))
    assert [r["difference"] for r in rows] == pytest.approx([expected[a] for a in sorted(expected)], abs=1e-4)
