"""Forward passes that reduce hidden states on the fly.

Each text gets one forward pass through the nnsight handle, stopped after the deepest layer that
is asked for; inside the pass each layer's residual stream is reduced at once (a mean over tokens,
or running moments), so memory never holds every token's activations for a whole corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .models import Model, layer_output


def tokenize(model: Model, text: str) -> torch.Tensor:
    return model.tokenizer(text, return_tensors="pt").input_ids


def reduce_layers(
    model: Model,
    input_ids: torch.Tensor,
    reduce: Callable[[torch.Tensor], torch.Tensor],
    layers: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """One forward pass; ``reduce(hidden[tokens, width])`` applied at each layer, in layer order."""
    layers = list(range(model.n_layers)) if layers is None else sorted(layers)
    out: list[torch.Tensor] = []
    with torch.inference_mode(), model.nn.trace(input_ids) as tracer:
        for index in layers:
            out.append(reduce(layer_output(model.layers[index].output)[0]).save())
        tracer.stop()  # the layers after the deepest requested one and the LM head are not needed
    return [t.detach().to(torch.float64) for t in out]


def text_means(
    model: Model, texts: Sequence[str], offset: int, desc: str = "stories", progress: bool = True
) -> torch.Tensor:
    """Mean residual stream over each text's tokens from ``offset`` on: (texts, layers, width).

    A text shorter than ``offset + 1`` tokens keeps its last token, so nothing is empty.
    """
    result = torch.empty(len(texts), model.n_layers, model.width, dtype=torch.float64)
    for i, text in enumerate(tqdm(texts, desc=desc, disable=not progress, leave=False)):
        ids = tokenize(model, text)
        start = min(offset, ids.shape[1] - 1)
        result[i] = torch.stack(reduce_layers(model, ids, lambda h, s=start: h[s:].mean(0)))
    return result


class Moments:
    """Running count, sum, sum of outer products and summed norm of token activations per layer."""

    def __init__(self, n_layers: int, width: int):
        self.count = 0
        self.sum = torch.zeros(n_layers, width, dtype=torch.float64)
        self.outer = torch.zeros(n_layers, width, width, dtype=torch.float64)
        self.norm_sum = torch.zeros(n_layers, dtype=torch.float64)

    def add(self, hidden: list[torch.Tensor]) -> None:
        for layer, h in enumerate(hidden):
            h = h.to(torch.float64)
            self.sum[layer] += h.sum(0)
            self.outer[layer] += h.T @ h
            self.norm_sum[layer] += h.norm(dim=-1).sum()
        self.count += hidden[0].shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    @property
    def covariance(self) -> torch.Tensor:
        mean = self.mean
        return self.outer / self.count - mean[:, :, None] * mean[:, None, :]

    @property
    def mean_norm(self) -> torch.Tensor:
        return self.norm_sum / self.count


def token_moments(
    model: Model, texts: Sequence[str], offset: int, desc: str = "neutral", progress: bool = True
) -> Moments:
    """Moments of every token's residual stream (from ``offset`` on) over ``texts``, per layer."""
    moments = Moments(model.n_layers, model.width)
    for text in tqdm(texts, desc=desc, disable=not progress, leave=False):
        ids = tokenize(model, text)
        start = min(offset, ids.shape[1] - 1)
        moments.add(reduce_layers(model, ids, lambda h, s=start: h[s:]))
    return moments
