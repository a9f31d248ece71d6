"""`make bench`: run every benchmark, print a table and write build/benchmarks.json.

python -m benchmarks            # the default model, and the 1.5B model when it is installed
python -m benchmarks --quick    # the tracing ratios only
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from . import scale, targets, trace_speed


def machine() -> dict:
    import os

    return {
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tracing ratios only")
    args = parser.parse_args()
    # the browser test's latest measurement (build/browser-latency.json), read in every mode
    results = {"machine": machine(), "trace_speed": trace_speed.run(), "scrub_latency": scale.browser_latency()}
    t = results["trace_speed"]
    print(f"trace vs bare forward, {t['model']}, {t['tokens']} tokens, {t['emotions']} emotions, {t['threads']} thr.")
    for name, seconds in t["seconds"].items():
        print(f"  {name:<22} {seconds:7.3f} s  ({seconds / t['seconds']['bare_forward']:.2f}x)")
    print(f"  bare forward: {t['bare_tokens_per_second']:.0f} tokens/s, {t['bare_gflops_per_second']:.1f} GFLOP/s")
    if not args.quick:
        results.update(scale.run())
        e = results["extraction"]
        print(
            f"extraction, {e['texts']} stories ({e['tokens']} tokens): bare {e['seconds']['bare_forward']:.2f} s, "
            f"one per pass {e['ratio_one_by_one_vs_bare']:.2f}x, batched {e['ratio_batched_vs_bare']:.2f}x "
            f"({e['speedup_batched']:.1f}x faster); full corpus ≈ {e['corpus_minutes_extrapolated']:.1f} min"
        )
        lo = results["loading"]
        print(
            f"load: warm {lo['warm']['seconds']:.1f} s ({lo['warm']['peak_mb']:.0f} MB peak), "
            f"cold {lo['cold']['seconds']:.1f} s ({lo['cold']['peak_mb']:.0f} MB peak)"
        )
        m = results["memory"]
        print(
            f"peak memory, {m['tokens']} tokens: bare forward {m['bare_forward_peak_mb']:.0f} MB, "
            f"trace all layers {m['trace_all_layers_peak_mb']:.0f} MB (model loaded {m['model_loaded_mb']:.0f} MB)"
        )
        if results["scrub_latency"]:
            s = results["scrub_latency"]["latency_ms"]
            print(f"scrub latency (browser test): median {s['median']} ms, p90 {s['p90']} ms, max {s['max']} ms")
        results["bigger_model"] = scale.bigger_model()
        b = results["bigger_model"]
        if b:
            print(
                f"{b['model']}, {b['tokens']} tokens: bare {b['bare_tokens_per_second']:.0f} tokens/s "
                f"({b['bare_gflops_per_second']:.1f} GFLOP/s), trace default layer {b['ratio_default_layer']:.2f}x, "
                f"all layers {b['ratio_all_layers']:.2f}x"
            )
    out = Path("build") / "benchmarks.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    print("targets:")
    missed = 0
    for what, value, op, target, met in targets.check(results):
        verdict = "not measured" if met is None else "met" if met else "MISSED"
        shown = "–" if value is None else f"{value:.3g}"
        print(f"  {what:<48} {shown:>8} (target {op} {target:g}): {verdict}")
        missed += met is False
    return 1 if missed else 0


raise SystemExit(main())
