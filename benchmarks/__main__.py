"""`make bench`: run every benchmark, print a table and write build/benchmarks.json."""

import json
import sys
from pathlib import Path

from . import trace_speed


def main() -> int:
    results = {"trace_speed": trace_speed.run()}
    out = Path("build") / "benchmarks.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    t = results["trace_speed"]
    print(
        f"trace vs bare forward, {t['model']}, {t['tokens']} tokens, {t['emotions']} emotions, {t['threads']} threads"
    )
    for name, seconds in t["seconds"].items():
        print(f"  {name:<22} {seconds:7.3f} s  ({seconds / t['seconds']['bare_forward']:.2f}x)")
    print(f"  bare forward: {t['bare_tokens_per_second']:.0f} tokens/s, {t['bare_gflops_per_second']:.1f} GFLOP/s")
    print(f"wrote {out}", file=sys.stderr)
    return 0


raise SystemExit(main())
