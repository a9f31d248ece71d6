"""Remote (NDIF) models: status and key checks with one-line errors, the key never shown, and the
code that runs remotely (in-trace steering, traced decisions, batched reductions) checked locally
against the local paths on the real default model."""

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import explorer as ex
from explorer import activations, decisions, remote
from explorer.corpus import load_corpus
from explorer.hooks import Steering
from explorer.tracing import readout_pass

pytestmark = pytest.mark.integration

SECRET = "ndif-test-key-3f9c2e7d"
HOSTED = "someone/hosted-model"


@pytest.fixture(scope="module")
def vectors(default_model):
    return ex.load_vectors(default_model)


@pytest.fixture()
def fake_ndif(monkeypatch):
    """A loopback stand-in for NDIF's /status: one model running."""
    body = json.dumps(
        {"deployments": {"a": {"repo_id": HOSTED, "application_state": "RUNNING"},
                         "b": {"repo_id": "someone/sleeping", "application_state": "NOT_STARTED"}}}
    ).encode()  # fmt: skip

    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from nnsight import CONFIG

    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(CONFIG.API, "HOST", url)
    yield url
    server.shutdown()


def test_unreachable_ndif_is_one_line_with_the_local_alternative(monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ex.ExplorerError) as err:
        ex.load_model("meta-llama/Llama-3.1-8B-Instruct", remote=True)
    message = str(err.value)
    assert "unreachable" in message and "ex.load_model() for the default model" in message and "\n" not in message


def test_unhosted_model_lists_what_is_running(fake_ndif):
    with pytest.raises(ex.ExplorerError, match=f"'someone/other' is not running on NDIF \\(running: {HOSTED}\\)"):
        ex.load_model("someone/other", remote=True)


def test_missing_key_is_one_line_and_a_given_key_is_never_shown(fake_ndif, monkeypatch):
    from nnsight import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    with pytest.raises(ex.ExplorerError, match="no NDIF API key: set the NDIF_API_KEY environment variable"):
        ex.load_model(HOSTED, remote=True)
    monkeypatch.setenv("NDIF_API_KEY", SECRET)
    with pytest.raises(ex.ExplorerError) as err:  # offline: the hub has no config for it
        ex.load_model(HOSTED, remote=True)
    assert "cannot read the config and tokenizer" in str(err.value) and SECRET not in str(err.value)
    assert CONFIG.API.APIKEY == SECRET  # in memory, for nnsight's requests only


def test_cli_remote_never_prints_logs_or_saves_the_key(fake_ndif, tmp_path):
    from nnsight import CONFIG

    config_file = Path(sys.modules["nnsight"].__file__).parent / "config.yaml"
    before = config_file.read_bytes() if config_file.exists() else b""
    env = dict(os.environ, NDIF_API_KEY=SECRET, NDIF_HOST=CONFIG.API.HOST, HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "explorer", "-v", "trace", "impossible-code", "--model", HOSTED, "--remote"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot read the config and tokenizer")
    assert SECRET not in done.stdout + done.stderr
    after = config_file.read_bytes() if config_file.exists() else b""
    assert SECRET.encode() not in after and after == before
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked


def test_in_trace_steering_equals_hook_steering(default_model, vectors):
    model = default_model
    ids = torch.tensor([model.tokenizer("The deadline is in ten minutes and the build is red.").input_ids])
    read = {layer: vectors.directions[layer] for layer in (8, 20, 25)}
    unit = vectors["desperate"].directions / vectors["desperate"].directions.norm(dim=-1, keepdim=True)
    deltas = {layer: (0.08 * vectors.residual_norm[layer] * unit[layer])[None] for layer in (12, 20)}
    plain = readout_pass(model, ids, read)
    with model.steered(Steering("hooks", deltas, slice(4, None))):
        hooked = readout_pass(model, ids, read)
    with model.steered(Steering("traced", deltas, slice(4, None), in_trace=True)):
        traced = readout_pass(model, ids, read)
    assert np.abs(hooked - plain).max() > 1.0
    np.testing.assert_allclose(traced, hooked, atol=1e-3)
    np.testing.assert_array_equal(traced[:4], plain[:4])


def test_traced_decisions_equal_cached_decisions(default_model, vectors):
    model = default_model
    episode = ex.load_episode("alex-replacement")
    decision = episode.require_decision()
    cached = decisions.CachedDecisionRunner(model, episode, decision)
    traced = decisions.TracedDecisionRunner(model, episode, decision)
    layer = model.default_layer
    unit = vectors["calm"].directions[layer] / vectors["calm"].directions[layer].norm()
    deltas = {layer: (0.1 * vectors.residual_norm[layer] * unit)[None]}
    assert traced.log_odds(None) == pytest.approx(cached.log_odds(None), abs=1e-3)
    assert traced.log_odds(deltas) == pytest.approx(cached.log_odds(deltas), abs=1e-3)


def test_batched_reductions_equal_one_text_at_a_time(default_model):
    model = default_model
    corpus = load_corpus()
    texts = [s.text for s in corpus.stories[:5]] + ["Short."]
    rows = []
    for text in texts:
        ids = activations.tokenize(model, text)
        start = min(10, ids.shape[1] - 1)
        rows.append(torch.stack(activations.reduce_layers(model, ids, lambda h, s=start: h[s:].mean(0))))
    one_by_one = torch.stack(rows)
    batched = activations.text_means(model, texts, 10, progress=False, batch_size=4)
    assert torch.allclose(batched, one_by_one, atol=1e-3, rtol=1e-5)
    neutral = list(corpus.neutral)[:6]
    full = activations.token_moments(model, neutral, 10, progress=False, batch_size=3)
    thin = activations.token_moments(model, neutral, 10, progress=False, batch_size=3, max_tokens_per_text=16)
    assert thin.count == 16 * len(neutral) < full.count
    cosine = torch.nn.functional.cosine_similarity(thin.mean, full.mean, dim=-1)
    assert float(cosine.min()) > 0.9, cosine


def test_remote_batches_are_bounded():
    assert 1 <= remote.REMOTE_BATCH_TEXTS <= 16
