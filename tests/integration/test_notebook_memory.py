"""The quickstart fits a free Binder: its kernel's resident memory stays under 1.5 GB.

Binder gives the Jupyter server and the kernel 2 GB together. The notebook runs headless in a
fresh kernel with an empty trace cache (as on a first visit; the de-quantized model is kept, as
postBuild prepares it), and the kernel's peak resident size is read from the kernel process itself
(its high-water mark in /proc, or psutil samples where there is none).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from benchmarks.notebook_memory import LIMIT_MB, measure

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_kernel_stays_within_binders_memory():
    path = ROOT / "notebooks" / "01-quickstart.ipynb"
    code_cells = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
    result = measure(path, cold=True)
    print(result.verdict(), result.growth())
    assert not result.errors, result.errors
    # the watch saw the kernel after every code cell, and a loaded model alone is hundreds of MB
    assert len(result.cells) == code_cells and result.cells[0][1] > 300, result.cells
    # 1.5 GB for the kernel leaves the Jupyter server its ~150 MB and a margin within Binder's 2 GB
    # (measured: 1,259 MB; docs/BENCHMARKS.md has every notebook's peak)
    assert result.peak_mb <= LIMIT_MB, result.verdict(LIMIT_MB)
