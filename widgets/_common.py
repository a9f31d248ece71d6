"""Helpers shared by the widgets: a robust colour range, offline charts, JSON-safe numbers."""

from __future__ import annotations

import logging
import math

import altair as alt
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FAIL = "#d62728"
PASS = "#2ca02c"
_offline_tried = False


def axis_limit(values: np.ndarray, percentile: float = 99.0) -> float:
    """Symmetric colour/axis limit: the ``percentile`` of |values| that are not NaN (1.0 if none).

    Callers leave out the first token (an attention sink whose read-out can be hundreds of z) and
    chat-template tokens unless asked to include them: one sink would wash every other token out.
    """
    values = np.abs(np.asarray(values, dtype=np.float64))
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0
    limit = float(np.percentile(values, percentile))
    return round(limit, 3) if math.isfinite(limit) and limit > 0 else 1.0


def rounded(values: np.ndarray, digits: int = 3) -> list:
    """Values as plain Python floats with ``digits`` decimals; NaN becomes None (JSON null)."""
    array = np.round(np.asarray(values, dtype=np.float64), digits)  # float64 first, or 0.123 prints as 0.12300000339
    return [None if not math.isfinite(v) else v for v in array.tolist()]


def clean(value):
    """A JSON-safe scalar: numpy numbers to Python ones, NaN/NA to None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


def enable_offline_charts() -> None:
    """Serve JupyterChart's JavaScript from vl-convert instead of a CDN (once per process)."""
    global _offline_tried
    if _offline_tried:
        return
    _offline_tried = True
    try:
        alt.JupyterChart.enable_offline()
    except Exception as exc:  # charts still work online; offline needs vl-convert
        log.warning("JupyterChart offline mode unavailable (%s); charts load Vega from a CDN", exc)
