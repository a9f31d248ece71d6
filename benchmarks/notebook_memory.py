"""Peak resident memory of each notebook's kernel, executed headless, one notebook at a time.

A free Binder gives the Jupyter server and the kernel 2 GB together; the notebooks aim at a
kernel peak under 1.5 GB. The peak is the kernel process's high-water mark (``VmHWM`` in
``/proc/<pid>/status``), read after every cell, so no short spike between two samples is missed;
where ``/proc`` has no such field the resident size is sampled with psutil every 20 ms instead.

    python -m benchmarks.notebook_memory                       # every notebook in notebooks/
    python -m benchmarks.notebook_memory --cold notebooks/01-quickstart.ipynb --json build/memory.json

``--cold`` runs with an empty trace cache (the models kept), as a first session on Binder does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 1500.0  # a free Binder's 2 GB, less the Jupyter server (~150 MB) and a margin; the suite's limit
MB = 1024 * 1024


@dataclass
class NotebookMemory:
    """One headless run of a notebook: the kernel's peak and how it grew cell by cell."""

    notebook: str
    peak_mb: float
    seconds: float
    peak_anon_mb: float = 0.0  # the part no page cache backs (sampled): what an out-of-memory kill counts
    cells: list[tuple[int, float]] = field(default_factory=list)  # (cell index, kernel peak so far, MB)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def verdict(self, limit_mb: float = LIMIT_MB) -> str:
        state = "within" if self.peak_mb <= limit_mb else "OVER"
        return (
            f"{self.notebook}: kernel peak {self.peak_mb:.0f} MB (anonymous {self.peak_anon_mb:.0f} MB), "
            f"{state} {limit_mb:.0f} MB ({self.seconds:.0f} s)"
        )

    def growth(self, top: int = 3) -> list[tuple[int, float]]:
        """The cells that raised the peak most: (cell index, MB added)."""
        steps, last = [], 0.0
        for index, peak in self.cells:
            steps.append((index, peak - last))
            last = peak
        return sorted(steps, key=lambda s: -s[1])[:top]


def _status_mb(pid: int, field: str) -> float | None:
    """A size from /proc/<pid>/status (Linux: VmHWM, the peak resident size so far; RssAnon), or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) / 1024 if found else None


class _Watch:
    """Follows the kernel of a running NotebookClient and keeps its peak resident size."""

    def __init__(self, client: NotebookClient, interval: float = 0.02):
        self.client, self.interval = client, interval
        self.peak_mb = 0.0
        self.peak_anon_mb = 0.0
        self.pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _find_pid(self) -> int | None:
        km = getattr(self.client, "km", None)
        provisioner = getattr(km, "provisioner", None)
        pid = getattr(provisioner, "pid", None)
        return int(pid) if pid else None

    def read(self) -> float:
        if self.pid is None:
            self.pid = self._find_pid()
        if self.pid is None:
            return self.peak_mb
        anon = _status_mb(self.pid, "RssAnon")
        self.peak_anon_mb = max(self.peak_anon_mb, anon or 0.0)
        high = _status_mb(self.pid, "VmHWM")
        if high is None:
            try:
                high = psutil.Process(self.pid).memory_info().rss / MB
            except psutil.Error:
                return self.peak_mb
        self.peak_mb = max(self.peak_mb, high)
        return self.peak_mb

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.read()

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _cold_cache() -> Path:
    """A fresh cache folder that shares only the de-quantized models: traces, extractions and
    everything else are computed again, as in a first Binder session (postBuild prepares the model)."""
    from explorer.cache import cache_root

    fresh = Path(tempfile.mkdtemp(prefix="evx-cold-cache-"))
    (fresh / "models").symlink_to(cache_root() / "models")
    return fresh


def measure(path: str | Path, timeout: int = 1800, cold: bool = False) -> NotebookMemory:
    """Execute the notebook at ``path`` in a fresh kernel and return its kernel's peak memory;
    ``cold``: with an empty trace cache (see :func:`_cold_cache`)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, resources=resources)
    watch = _Watch(client)
    cells: list[tuple[int, float]] = []

    def after_cell(cell, cell_index, **_):
        if cell.cell_type == "code":
            cells.append((cell_index, round(watch.read(), 1)))

    client.on_cell_executed = after_cell
    cache = _cold_cache() if cold else None
    env = dict(os.environ, **({"EXPLORER_CACHE": str(cache)} if cache else {}))
    started = time.monotonic()
    failed = []
    try:
        with watch:
            try:
                client.execute(env=env)
            except Exception as exc:  # a timeout or a dead kernel: the peak so far still counts
                failed.append(f"run: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        if cache:
            shutil.rmtree(cache)  # the models link is removed, never followed
    errors = failed + [
        f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    seconds = round(time.monotonic() - started, 1)
    return NotebookMemory(path.name, round(watch.peak_mb, 1), seconds, round(watch.peak_anon_mb, 1), cells, errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notebook_memory")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--limit-mb", type=float, default=LIMIT_MB)
    parser.add_argument(
        "--cold", action="store_true", help="an empty trace/extraction cache (models kept), as a first Binder session"
    )
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    results = []
    for path in paths:  # one at a time: each notebook gets the machine's cores to itself
        result = measure(path, cold=args.cold)
        results.append(result)
        print(result.verdict(args.limit_mb), flush=True)
        print("  largest steps: " + ", ".join(f"cell {i} +{mb:.0f} MB" for i, mb in result.growth()), flush=True)
        for error in result.errors:
            print(f"  error in {error}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.to_dict() for r in results], indent=2))
    print("\n| notebook | kernel peak (MB) | of which anonymous (MB) | run (s) |\n|---|---:|---:|---:|")
    for r in results:
        print(f"| {r.notebook} | {r.peak_mb:.0f} | {r.peak_anon_mb:.0f} | {r.seconds:.0f} |")
    over = [r for r in results if r.peak_mb > args.limit_mb or r.errors]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
