"""Steering: add a multiple of an emotion vector to the residual stream, and measure what it does.

``strength`` is a fraction of the layer's mean residual norm (from the vectors' calibration), so
``0.05`` means "add a vector 5% as long as a typical residual at that layer", whatever the model.
Strengths the paper used are within ±0.1; far larger ones (0.2–1.0) break generation.

    with ex.steer(model, vectors["desperate"], 0.05):
        steered = ex.trace(model, episode, vectors)     # the trace cache knows it was steered
    curve = ex.dose_response(model, episode, vectors, emotions=["desperate", "calm"])

Steering hooks the decoder layers' outputs with plain PyTorch forward hooks, so it applies to
everything that runs *that* model inside the ``with`` block: traces, generations, decisions. The
block lives on the model's own steering stack (:mod:`explorer.hooks`), never in the process, so a
second model is untouched. Decisions and dose-response live in :mod:`explorer.decisions`,
generation in :mod:`explorer.generation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .errors import ExplorerError
from .hooks import Steering
from .models import Model
from .vectors import EmotionVector, EmotionVectors, random_unit_directions

DEFAULT_STRENGTHS = (-0.1, -0.075, -0.05, -0.025, 0.0, 0.025, 0.05, 0.075, 0.1)
MAX_SAFE_STRENGTH = 0.25  # beyond this, say so: generation degrades (paper; replications)


def _directions(vector, vectors: EmotionVectors | None, width: int, n_layers: int) -> tuple[str, torch.Tensor]:
    """(name, (layers, width) unit directions) for an EmotionVector, an emotion name or a tensor."""
    if isinstance(vector, str):
        if vectors is None:
            raise ExplorerError(f"steer: '{vector}' is an emotion name; pass vectors=... to look it up")
        vector = vectors[vector]
    if isinstance(vector, EmotionVector):
        name, directions = vector.name, vector.directions.float()
    elif isinstance(vector, torch.Tensor | np.ndarray):
        directions = torch.as_tensor(vector).float()
        if directions.dim() == 1:
            directions = directions.expand(n_layers, -1)
        name = "direction"
    else:
        raise ExplorerError(f"steer: cannot steer with a {type(vector).__name__}; pass an EmotionVector or a tensor")
    if directions.shape != (n_layers, width):
        raise ExplorerError(
            f"steer: '{name}' has shape {tuple(directions.shape)} but the model needs ({n_layers}, {width}) "
            "or (width,): use vectors built for this model"
        )
    norms = directions.norm(dim=-1, keepdim=True)
    if bool((norms < 1e-12).any()):
        raise ExplorerError(f"steer: '{name}' is zero at some layer (e.g. v - v); nothing to steer with")
    return name, directions / norms


def _residual_norm(model: Model, vector, vectors: EmotionVectors | None) -> torch.Tensor:
    norm = getattr(vector, "residual_norm", None)
    if norm is None and vectors is not None:
        norm = vectors.residual_norm
    if norm is None:
        raise ExplorerError("steer: no residual-norm calibration; pass vectors=... (from ex.load_vectors)")
    if len(norm) != model.n_layers:
        raise ExplorerError(f"steer: calibration has {len(norm)} layers but '{model.name}' has {model.n_layers}")
    return norm.float()


def check_strength(strength: float) -> float:
    """``strength`` as a float, or a one-line error when it is not a usable steering strength."""
    if isinstance(strength, bool) or not isinstance(strength, int | float | np.number):
        raise ExplorerError(f"steer: strength {strength!r} is not a number; use e.g. 0.05 (a fraction of the norm)")
    strength = float(strength)
    if not math.isfinite(strength):
        raise ExplorerError(f"steer: strength {strength} is not a finite number")
    if abs(strength) > 2.0:
        raise ExplorerError(
            f"steer: strength {strength:g} is a fraction of the residual norm; use values within ±0.1 (at most ±2)"
        )
    return strength


def steer(
    model: Model,
    vector,
    strength: float,
    layers: int | Sequence[int] | str | None = None,
    positions: slice | Sequence[int] | None = None,
    vectors: EmotionVectors | None = None,
):
    """Context manager: inside it, every forward pass of ``model`` is steered.

    Args:
        model: from :func:`explorer.load_model`.
        vector: an :class:`EmotionVector` (``vectors["calm"]``, ``vectors["desperate"] - vectors["calm"]``),
            an emotion name (with ``vectors``), or a tensor of shape (width,) or (layers, width).
            Only its direction matters; it is normalised per layer.
        strength: a fraction of each steered layer's mean residual norm; within ±0.1 is the
            range the paper used.
        layers: one layer, a list, or "all" (default: the model's default read-out layer).
        positions: absolute token positions to steer (a slice or a list); default every token,
            including tokens generated inside the block.
        vectors: the calibration source when ``vector`` is a bare tensor or a name.
    """
    name, deltas = steering_deltas(model, vector, strength, layers, vectors)
    return model.steered(Steering(f"{strength:+g}*{name}", deltas, positions, in_trace=model.remote))


def steering_deltas(
    model: Model,
    vector,
    strength: float,
    layers: int | Sequence[int] | str | None = None,
    vectors: EmotionVectors | None = None,
) -> tuple[str, dict[int, torch.Tensor]]:
    """(name, {layer: (1, width) addition}): exactly what :func:`steer` adds, for callers that stack
    several conditions into one batch (one row per condition). Arguments as :func:`steer`."""
    strength = check_strength(strength)
    name, directions = _directions(vector, vectors, model.width, model.n_layers)
    norm = _residual_norm(model, vector, vectors)
    layers = model.resolve_layers(layers)
    return name, {layer: (strength * norm[layer] * directions[layer])[None, :] for layer in layers}


def random_direction(model: Model, seed: int = 0) -> torch.Tensor:
    """A random unit direction (same at every layer), the control for any steering vector."""
    return random_unit_directions(1, model.width, seed=seed)[0]
