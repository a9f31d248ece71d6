"""The quickstart fits a free Binder: its kernel's resident memory stays under 1.9 GB (target 1.5 GB).

Binder gives the Jupyter server and the kernel 2 GB together. The notebook runs headless in a
fresh kernel with an empty trace cache (as on a first visit; the de-quantized model is kept, as
postBuild prepares it), and the kernel's peak resident size is read from the kernel process itself
(its high-water mark in /proc, or psutil samples where there is none).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from benchmarks.notebook_memory import KILL_MB, measure

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
    # the kernel must never be killed; the 1.5 GB target (LIMIT_MB) is reported in docs/BENCHMARKS.md, not met yet
    assert result.peak_mb <= KILL_MB, result.verdict(KILL_MB)
