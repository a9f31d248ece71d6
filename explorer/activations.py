"""Forward passes that reduce hidden states on the fly.

Each text gets one forward pass through the nnsight handle, stopped after the deepest layer that
is asked for; inside the pass each layer's residual stream is reduced at once (a mean over tokens,
or running moments), so memory never holds every token's activations for a whole corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .memory import release_freed_memory
from .models import Model, layer_output
from .remote import pass_failures


def tokenize(model: Model, text: str) -> torch.Tensor:
    """(1, tokens) ids of a plain text (:meth:`Model.tokenize`'s rule)."""
    return torch.tensor([model.tokenize(text)["input_ids"]])


def hidden_states(model: Model, text: str, layer: int) -> tuple[torch.Tensor, list[str]]:
    """Every token's residual stream of a plain ``text`` at ``layer``: ((tokens, width), token
    strings) — one pass, stopped after ``layer``; for looking at a single text token by token."""
    (layer,) = model.resolve_layers(layer)
    ids = tokenize(model, text)
    (hidden,) = reduce_layers(model, ids, lambda h: h, layers=[layer])
    return hidden, [model.tokenizer.decode([t]) for t in ids[0].tolist()]


def reduce_layers(
    model: Model,
    input_ids: torch.Tensor,
    reduce: Callable[[torch.Tensor], torch.Tensor],
    layers: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """One forward pass; ``reduce(hidden[tokens, width])`` applied at each layer, in layer order."""
    layers = list(range(model.n_layers)) if layers is None else sorted(layers)
    out: list[torch.Tensor] = []
    with pass_failures(model), torch.inference_mode(), model.trace(input_ids, use_cache=False) as tracer:
        for index in layers:
            out.append(reduce(layer_output(model.layers[index].output)[0]).save())
        tracer.stop()  # the layers after the deepest requested one and the LM head are not needed
    return [t.detach().to(torch.float64) for t in out]


def _batches(model: Model, texts: Sequence[str], batch_size: int):
    """Tokenized texts in batches sorted by length (less padding), with their original indices."""
    encoded = [tokenize(model, text)[0] for text in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        yield chunk, [encoded[i] for i in chunk]


def _right_padded(ids: list[torch.Tensor], pad: int) -> torch.Tensor:
    """(batch, longest) with each text at the left. Causal attention means no real token ever
    attends to the padding after it, so every real token's states equal an unbatched pass."""
    out = torch.full((len(ids), max(len(t) for t in ids)), pad, dtype=torch.long)
    for row, t in enumerate(ids):
        out[row, : len(t)] = t
    return out


def _pad_id(model: Model) -> int:
    tok = model.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id or 0)


def batch_size_for(model: Model) -> int:
    """Texts per pass: a few locally (both cores busy, bounded memory), more per NDIF request."""
    from .remote import REMOTE_BATCH_TEXTS

    return REMOTE_BATCH_TEXTS if model.remote else 8


def _layer_batches(
    model: Model,
    batch: torch.Tensor,
    weights: torch.Tensor | None,
    rows: torch.Tensor | None,
    layers: Sequence[int] | None = None,
):
    """One pass over ``batch``: per layer (all, or ``layers``) either weighted token sums
    (batch, width) or the hidden states of the flat token positions ``rows`` (n, width)."""
    out: list[torch.Tensor] = []
    with pass_failures(model), torch.inference_mode(), model.trace(batch, use_cache=False) as tracer:
        for index in range(model.n_layers) if layers is None else sorted(layers):
            hidden = layer_output(model.layers[index].output)
            if weights is not None:
                out.append((hidden * weights[..., None].to(hidden.dtype)).sum(1).save())
            else:
                out.append(hidden.reshape(-1, hidden.shape[-1])[rows].save())
        tracer.stop()
    release_freed_memory()  # the pass's activations, freed but still held by the C heap
    if weights is None:
        # token rows stay float32: every layer's rows in float64 at once doubled a pass's peak
        # (about 440 MB for 8 dialogues); Moments.add widens one layer at a time
        return [t.detach() for t in out]
    return [t.detach().to(torch.float64) for t in out]


def window_start(n_tokens: int, offset: int) -> int:
    """First token a text's mean read-out averages over: ``offset`` for long texts, at most the
    middle for short ones, never the attention-sink position 0 unless the text is one token."""
    return min(offset, max(1, (n_tokens - 1) // 2), n_tokens - 1)


def text_means(
    model: Model,
    texts: Sequence[str],
    offset: int,
    desc: str = "stories",
    progress: bool = True,
    batch_size: int | None = None,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Mean residual stream over each text's tokens from ``offset`` on: (texts, layers, width), at
    every layer or only at ``layers`` (the pass then stops after the deepest).

    Short texts keep at least their second half: the window starts at ``min(offset, (n - 1) // 2)``
    but never at position 0, the attention sink whose read-outs are extreme whatever the text (a
    one-token text is read at its only token). Texts go through the model in right-padded batches;
    only the means leave each pass.
    """
    batch_size = batch_size or batch_size_for(model)
    n_layers = model.n_layers if layers is None else len(layers)
    result = torch.empty(len(texts), n_layers, model.width, dtype=torch.float64)
    bar = tqdm(total=len(texts), desc=desc, disable=not progress, leave=False)
    for chunk, ids in _batches(model, texts, batch_size):
        batch = _right_padded(ids, _pad_id(model))
        weights = torch.zeros(batch.shape, dtype=torch.float32)
        for row, t in enumerate(ids):
            start = window_start(len(t), offset)
            weights[row, start : len(t)] = 1.0 / (len(t) - start)
        result[chunk] = torch.stack(_layer_batches(model, batch, weights, None, layers), 1)
        bar.update(len(chunk))
    bar.close()
    return result


def last_token_states(
    model: Model,
    ids: Sequence[torch.Tensor],
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The residual stream at each sequence's last token: (sequences, layers, width), at every
    layer or only at ``layers``. ``ids`` are 1-D token id tensors (already templated as the model
    should read them); they go through the model in right-padded batches, so a prompt's last
    token reads exactly what it reads alone."""
    batch_size = batch_size or batch_size_for(model)
    n_layers = model.n_layers if layers is None else len(layers)
    result = torch.empty(len(ids), n_layers, model.width, dtype=torch.float64)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = _right_padded([ids[i] for i in chunk], _pad_id(model))
        weights = torch.zeros(batch.shape, dtype=torch.float32)
        for row, i in enumerate(chunk):
            weights[row, len(ids[i]) - 1] = 1.0
        result[chunk] = torch.stack(_layer_batches(model, batch, weights, None, layers), 1)
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

    def take_covariance(self) -> torch.Tensor:
        """:attr:`covariance`, computed in the buffer of the summed outer products (the same
        arithmetic, without a second (layers, width, width) float64 array: 80 MB for SmolLM2).
        The moments are spent: nothing more can be added."""
        mean, covariance = self.mean, self.outer
        for layer in range(len(covariance)):  # one layer's (width, width) temporary at a time
            covariance[layer].div_(self.count).sub_(torch.outer(mean[layer], mean[layer]))
        self.outer = None
        return covariance

    @property
    def mean_norm(self) -> torch.Tensor:
        return self.norm_sum / self.count


def token_moments(
    model: Model,
    texts: Sequence[str],
    offset: int,
    desc: str = "neutral",
    progress: bool = True,
    batch_size: int | None = None,
    max_tokens_per_text: int | None = None,
) -> Moments:
    """Moments of every token's residual stream (from ``offset`` on) over ``texts``, per layer.

    ``max_tokens_per_text`` keeps an evenly spaced subset of each text's tokens (default: all
    locally, 16 for remote models, so an NDIF response stays small); the moments stay unbiased.
    """
    batch_size = batch_size or batch_size_for(model)
    if max_tokens_per_text is None and model.remote:
        max_tokens_per_text = 16
    moments = Moments(model.n_layers, model.width)
    bar = tqdm(total=len(texts), desc=desc, disable=not progress, leave=False)
    for chunk, ids in _batches(model, texts, batch_size):
        batch = _right_padded(ids, _pad_id(model))
        rows = []
        for row, t in enumerate(ids):
            positions = torch.arange(window_start(len(t), offset), len(t))
            if max_tokens_per_text and len(positions) > max_tokens_per_text:
                keep = torch.linspace(0, len(positions) - 1, max_tokens_per_text).round().long()
                positions = positions[keep]
            rows.append(row * batch.shape[1] + positions)
        moments.add(_layer_batches(model, batch, None, torch.cat(rows)))
        bar.update(len(chunk))
    bar.close()
    return moments
