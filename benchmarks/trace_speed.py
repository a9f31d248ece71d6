"""Tracing cost against the bare model forward pass on the same tokens, measured in one run.

The bare forward is the model's full forward (through the LM head), as a user would run it.
Targets: read-outs at the default layer <= 0.8x (the pass stops early), at all layers <= 1.1x.
"""

from __future__ import annotations

import statistics
import time

import torch

import explorer as ex
from explorer.episodes import parse_episode
from explorer.tracing import readout_pass, rendered_ids


def long_episode(model: ex.Model, tokens: int = 2000) -> ex.Episode:
    """A failing-attempts episode of about ``tokens`` tokens (attempts repeat until long enough)."""
    messages = [
        {"role": "system", "content": "You are a coding agent. Make the test suite pass."},
        {"role": "user", "content": "Implement parse_dates so that every test in tests/test_dates.py passes."},
    ]
    attempt = 0
    while True:
        attempt += 1
        messages += [
            {
                "role": "assistant",
                "content": f"Attempt {attempt}: I will handle the two-digit year case separately.\n```python\n"
                "def parse_dates(text):\n    parts = text.split('-')\n    year = int(parts[0])\n"
                "    if year < 100:\n        year += 2000\n    return year, int(parts[1]), int(parts[2])\n```",
                "attempt": attempt,
            },
            {
                "role": "tool",
                "content": f"FAILED tests/test_dates.py::test_century - assert (1999, 1, 2) == (2099, 1, 2)\n"
                f"{attempt + 2} failed, 14 passed in 0.31s",
                "attempt": attempt,
                "outcome": "fail",
            },
        ]
        episode = parse_episode({"id": "benchmark", "title": "benchmark", "messages": messages})
        if len(rendered_ids(model, episode)[0].input_ids) >= tokens:
            return episode


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(model_name: str = ex.DEFAULT_MODEL, tokens: int = 2000, repeats: int = 5) -> dict:
    model = ex.load_model(model_name)
    vectors = ex.load_vectors(model)
    episode = long_episode(model, tokens)
    _, ids = rendered_ids(model, episode)
    default = {model.default_layer: vectors.directions[model.default_layer]}
    every = {layer: vectors.directions[layer] for layer in range(model.n_layers)}

    def bare():
        with torch.inference_mode():
            model.hf(ids)

    cases = {
        "bare_forward": bare,
        "trace_default_layer": lambda: readout_pass(model, ids, default),
        "trace_all_layers": lambda: readout_pass(model, ids, every),
    }
    for fn in cases.values():  # warm-up
        fn()
    seconds = {name: [] for name in cases}
    for _ in range(repeats):  # interleaved, so drifts in machine speed hit every case alike
        for name, fn in cases.items():
            seconds[name].append(_median_seconds(fn, 1))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    n_tokens = ids.shape[1]
    params = sum(p.numel() for p in model.hf.parameters())
    return {
        "model": model.name,
        "tokens": n_tokens,
        "emotions": len(vectors),
        "threads": torch.get_num_threads(),
        "seconds": median,
        "ratio_default_layer": median["trace_default_layer"] / median["bare_forward"],
        "ratio_all_layers": median["trace_all_layers"] / median["bare_forward"],
        "bare_tokens_per_second": n_tokens / median["bare_forward"],
        "bare_gflops_per_second": 2 * params * n_tokens / median["bare_forward"] / 1e9,
        "readout_bytes_all_layers": n_tokens * len(vectors) * model.n_layers * 4,
        "hidden_bytes_all_layers_if_kept": n_tokens * model.width * model.n_layers * 4,
    }
