"""Episodes rendered by the real tokenizers, traced in one pass by the real default model."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import explorer as ex
from explorer import cache
from explorer.episodes import render, shipped_episodes

pytestmark = pytest.mark.integration

INSTALLED = [name for name, entry in ex.ZOO.items() if entry.installed]


@pytest.fixture(scope="module")
def vectors(default_model):
    return ex.load_vectors(default_model)


@pytest.mark.parametrize("name", INSTALLED)
def test_token_spans_partition_tokens_and_reproduce_each_message(name):
    model = ex.load_model(name)
    for episode_id in shipped_episodes():
        episode = ex.load_episode(episode_id)
        rendered = render(model, episode)
        tokens = rendered.tokens
        assert list(tokens.token_index) == list(range(len(rendered.input_ids)))
        assert tokens.message_index.is_monotonic_increasing
        assert set(tokens.message_index) == set(range(len(episode.messages)))
        for i, message in enumerate(episode.messages):
            mine = tokens[tokens.message_index == i]
            assert (mine.role == message.role).all()
            text = rendered.text[mine.start.min() : mine.end.max()]
            assert message.content in text, (name, episode_id, i)
            first = mine[mine.in_content].start.min()  # first content token, possibly with a leading space
            assert message.content[:20] in rendered.text[first : first + 24]


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_trace_is_one_pass_without_lm_head_and_matches_hidden_states(default_model, vectors, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    model = default_model
    episode = ex.load_episode("impossible-code")
    first, h1 = _count_calls(model.torch_layers[0])
    deep, h2 = _count_calls(model.torch_layers[model.default_layer + 1])
    head, h3 = _count_calls(model.hf.lm_head)
    try:
        result = ex.trace(model, episode, vectors, layers=[5, model.default_layer])
    finally:
        for h in (h1, h2, h3):
            h.remove()
    assert (len(first), len(deep), len(head)) == (1, 0, 0)
    assert result.raw.shape == (len(result.tokens), len(vectors), 2)
    ids = torch.tensor([render(model, episode).input_ids])
    with torch.inference_mode():
        hidden = model.hf(ids, output_hidden_states=True).hidden_states
    for j, layer in enumerate(result.layers):
        expected = hidden[layer + 1][0] @ vectors.directions[layer].T
        assert np.allclose(result.raw[:, :, j], expected.numpy(), rtol=1e-3, atol=1e-2)
        z = (result.raw[:, :, j] - vectors.z_offset[layer].numpy()) / vectors.z_scale[layer].numpy()
        assert np.allclose(result.z[:, :, j], z, atol=1e-4)
    assert result.raw.nbytes == len(result.tokens) * len(vectors) * 2 * 4  # tokens x emotions x layers


def test_trace_cache_is_reused_and_rebuilt_when_damaged(default_model, vectors, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    episode = ex.load_episode("impossible-code-control")
    first = ex.trace(default_model, episode, vectors, layers=default_model.default_layer)
    files = list((tmp_path / "traces").glob("*.npz"))
    assert len(files) == 1
    calls, handle = _count_calls(default_model.torch_layers[0])
    again = ex.trace(default_model, episode, vectors, layers=default_model.default_layer)
    assert calls == []
    files[0].write_bytes(files[0].read_bytes()[:100])
    rebuilt = ex.trace(default_model, episode, vectors, layers=default_model.default_layer)
    handle.remove()
    assert calls == [1]
    assert np.array_equal(first.raw, again.raw) and np.array_equal(first.raw, rebuilt.raw)
    pd.testing.assert_frame_equal(first.tokens, again.tokens)


def test_too_long_episode_is_refused_not_truncated(default_model, vectors, monkeypatch):
    monkeypatch.setattr(default_model.hf.config, "max_position_embeddings", 64)
    with pytest.raises(ex.ExplorerError, match=r"renders to \d+ tokens but 'smollm2-135m-instruct' reads at most 64"):
        ex.trace(default_model, ex.load_episode("impossible-code"), vectors, use_cache=False)


def test_cli_trace_writes_the_csv_contract(tmp_path):
    out = tmp_path / "t.csv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "explorer",
            "trace",
            "impossible-code",
            "--out",
            str(out),
            "--parquet",
            str(tmp_path / "t.parquet"),
        ],
        check=True,
        capture_output=True,
    )
    table = pd.read_csv(out)
    assert list(table.columns[:5]) == ["token_index", "message_index", "role", "attempt", "token"]
    vectors = ex.EmotionVectors.load(ex.vectors.shipped_path(ex.DEFAULT_MODEL))
    assert list(table.columns[5:]) == vectors.emotions
    assert np.isfinite(table[vectors.emotions].to_numpy()).all()
    long = pd.read_parquet(tmp_path / "t.parquet")
    assert sorted(long.layer.unique()) == list(range(30))
    assert len(long) == 30 * len(table)


def test_cli_compare_reports_every_statistic():
    result = subprocess.run(
        [sys.executable, "-m", "explorer", "compare", "impossible-code", "--emotion", "desperate"],
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(result.stdout)
    assert report["control"] == "impossible-code-control"
    layer = report["layers"][0]
    assert layer["layer"] == 20
    assert len([a for a in layer["per_attempt"] if a["failed"]]) >= 6
    for block, key in [
        ("difference_trend", "permutation_p"),
        ("random_directions", "p"),
        ("shuffled_label_null", "p"),
    ]:
        assert 0 < layer[block][key] <= 1
    assert 1 <= layer["specificity"]["rank"] <= layer["specificity"]["of"]
    assert layer["after_pass"] is not None


def test_several_emotions_share_one_pair_of_passes(default_model, vectors):
    episode = ex.load_episode("impossible-code")
    calls, handle = _count_calls(default_model.torch_layers[0])
    try:
        both = ex.compare_emotions(default_model, episode, vectors, ["desperate", "calm"])
    finally:
        handle.remove()
    assert len(calls) == 2  # episode and control, once each, for both emotions
    assert both[0] == ex.compare(default_model, episode, vectors, "desperate")
    assert [r.emotion for r in both] == ["desperate", "calm"]


def test_saved_trace_opens_without_the_model_and_matches(default_model, vectors, tmp_path):
    episode = ex.load_episode("stranded-traveller")
    original = ex.trace(default_model, episode, vectors, layers=[default_model.default_layer, 5])
    path = original.save(tmp_path / "t.npz")
    loaded = ex.IntensityTrace.load(path)
    assert loaded.episode == episode and loaded.model_name == default_model.name
    assert loaded.layers == original.layers and loaded.default_layer == default_model.default_layer
    np.testing.assert_array_equal(loaded.z, original.z)
    pd.testing.assert_frame_equal(loaded.readouts(), original.readouts())
    path.write_bytes(b"not a trace")
    with pytest.raises(ex.ExplorerError, match="not a trace file written by IntensityTrace.save"):
        ex.IntensityTrace.load(path)


def test_shipped_traces_are_listed_and_missing_ones_named(tmp_path):
    for model_name, episodes in ex.shipped_traces().items():
        for episode_id in episodes:
            trace = ex.load_shipped_trace(model_name, episode_id)
            assert trace.model_name == model_name and trace.episode.id == episode_id
            assert np.isfinite(trace.z).all() and trace.default_layer in trace.layers
    with pytest.raises(ex.ExplorerError, match="no shipped trace of 'nope' for 'smollm2-135m-instruct'"):
        ex.load_shipped_trace("smollm2-135m-instruct", "nope")


def test_cli_ship_traces_writes_loadable_files(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "explorer", "ship-traces", "--episodes", "alex-control", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trace = ex.IntensityTrace.load(tmp_path / "alex-control.npz")
    assert trace.layers == [ex.load_model().default_layer] and len(trace.tokens) > 500


def test_bigger_models_shipped_vectors_match_its_zoo_entry():
    from explorer.corpus import load_corpus
    from explorer.models import default_layer
    from explorer.vectors import Recipe, shipped_path

    entry = ex.ZOO["qwen2.5-coder-1.5b-instruct"]
    vectors = ex.EmotionVectors.load(shipped_path(entry.name))
    assert vectors.directions.shape == (entry.n_layers, 40, entry.width)
    assert vectors.metadata["model_sha256"] == entry.sha256 and vectors.metadata["corpus_topics"] == 40
    # built from the whole of corpus v2 (every register and topic) with the default recipe (docs/VECTORS.md)
    assert vectors.metadata["corpus_sha256"] == load_corpus().fingerprint()
    assert Recipe.from_metadata(vectors.metadata) == Recipe() and vectors.readout_mode == "grand_mean"
    assert torch.allclose(vectors.directions.norm(dim=-1), torch.ones(entry.n_layers, 40), atol=1e-4)
    assert set(ex.shipped_traces()[entry.name]) == set(shipped_episodes())
    for episode_id in shipped_episodes():  # traced with these vectors, at the model's default layer
        trace = ex.load_shipped_trace(entry.name, episode_id)
        layer = default_layer(entry.n_layers)
        assert trace.layers == [layer] and trace.emotions == vectors.emotions
        # the z-scores use these vectors' neutral calibration: traced with the shipped file, not an older one
        expected = (trace.raw[:, :, 0] - vectors.z_offset[layer].numpy()) / vectors.z_scale[layer].numpy()
        np.testing.assert_allclose(trace.z[:, :, 0], expected, atol=1e-4)
