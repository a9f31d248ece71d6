"""Everything else a user waits for, each against the bare forward pass measured in the same run.

- corpus extraction: right-padded batches against one text per pass, and against the bare forward
  over the same texts; the full corpus's time is extrapolated from the measured rate;
- model load, warm (cache hit) and cold (de-quantization into an empty cache), each in a fresh
  process, with that process's peak memory;
- peak memory of a trace at every layer against a bare forward on the same episode;
- the browser test's scrub latency (build/browser-latency.json), when it has run.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import explorer as ex
from explorer import activations
from explorer.corpus import load_corpus

from .trace_speed import long_episode

CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
import torch
import explorer as ex
from explorer.tracing import readout_pass, rendered_ids


def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


mode, name = sys.argv[1], sys.argv[2]
model = ex.load_model(name)
loaded = time.perf_counter() - started
load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result = {"seconds": loaded, "peak_mb": load_peak}
if mode in ("trace", "forward"):
    from benchmarks.trace_speed import long_episode
    vectors = ex.load_vectors(model)
    _, ids = rendered_ids(model, long_episode(model, int(sys.argv[3])))
    result["before_pass_mb"] = status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current size
        f.write("5")
    with torch.inference_mode():
        if mode == "forward":
            model.hf(ids)
        else:
            readout_pass(model, ids, {layer: vectors.directions[layer] for layer in range(model.n_layers)})
    result["pass_peak_mb"] = status_mb("VmHWM")
print(json.dumps(result))
"""


def _child(mode: str, name: str, *args: str, env: dict | None = None) -> dict:
    import os

    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, name, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def extraction(model_name: str = ex.DEFAULT_MODEL, n_texts: int = 48, repeats: int = 3) -> dict:
    model = ex.load_model(model_name)
    corpus = load_corpus()
    stories = [s.text for s in corpus.stories]
    texts = stories[:: max(1, len(stories) // n_texts)][:n_texts]
    encoded = [activations.tokenize(model, t) for t in texts]
    tokens = sum(t.shape[1] for t in encoded)

    def bare():
        with torch.inference_mode():
            for ids in encoded:
                model.hf(ids)

    def one_by_one():
        for ids in encoded:
            start = min(10, ids.shape[1] - 1)
            activations.reduce_layers(model, ids, lambda h, s=start: h[s:].mean(0))

    def batched():
        activations.text_means(model, texts, 10, progress=False)

    cases = {"bare_forward": bare, "one_text_per_pass": one_by_one, "batched": batched}
    for fn in cases.values():
        fn()
    seconds = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            started = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - started)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    corpus_texts = len(corpus.stories) + len(corpus.neutral)
    return {
        "model": model.name,
        "texts": len(texts),
        "tokens": tokens,
        "seconds": median,
        "ratio_batched_vs_bare": median["batched"] / median["bare_forward"],
        "ratio_one_by_one_vs_bare": median["one_text_per_pass"] / median["bare_forward"],
        "speedup_batched": median["one_text_per_pass"] / median["batched"],
        "corpus_texts": corpus_texts,
        "corpus_minutes_extrapolated": median["batched"] / len(texts) * corpus_texts / 60,
    }


def loading(model_name: str = ex.DEFAULT_MODEL) -> dict:
    warm = _child("load", model_name)
    with tempfile.TemporaryDirectory() as empty:
        cold = _child("load", model_name, env={"EXPLORER_CACHE": empty})
    return {"model": model_name, "warm": warm, "cold": cold}


def memory(model_name: str = ex.DEFAULT_MODEL, tokens: int = 2000) -> dict:
    forward = _child("forward", model_name, str(tokens))
    traced = _child("trace", model_name, str(tokens))
    return {
        "model": model_name,
        "tokens": tokens,
        "bare_forward_peak_mb": forward["pass_peak_mb"],
        "trace_all_layers_peak_mb": traced["pass_peak_mb"],
        "model_loaded_mb": forward["before_pass_mb"],
    }


def browser_latency() -> dict | None:
    path = Path("build") / "browser-latency.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {k: data[k] for k in ("episode_tokens", "latency_ms", "transcript_ms_median", "chart_ms_median")}


def run(model_name: str = ex.DEFAULT_MODEL) -> dict:
    return {
        "extraction": extraction(model_name),
        "loading": loading(model_name),
        "memory": memory(model_name),
    }


def bigger_model(name: str = "qwen2.5-coder-1.5b-instruct", tokens: int = 512) -> dict | None:
    """Bare forward and trace ratios on the bigger local model (shorter episode: minutes, not tens)."""
    from explorer.vectors import shipped_path

    from .trace_speed import run as trace_run

    if not ex.ZOO[name].installed or not shipped_path(name).is_file():
        return None  # its vectors would be built first (tens of minutes); benchmark once shipped
    return trace_run(name, tokens=tokens, repeats=3)


__all__ = ["bigger_model", "browser_latency", "extraction", "loading", "long_episode", "memory", "run"]
