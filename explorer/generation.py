"""Live generation: the assistant's next turn, token by token, each new token read out as it is written.

Runs under the model's active steering (``with ex.steer(...): ex.generate(...)`` is a steered
generation) and records which steering was active. ``generate(..., steer=v, strength=s)`` steers
only the turn being written, as :func:`explorer.dose_response` steers only the decision turn: the
context before it is then the same for every condition, so it is run once and its key/value cache
reused by the next generation from the same context.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from .episodes import Episode, Message, render_text
from .errors import ExplorerError
from .models import Model, layer_output
from .steering import steer as steer_block
from .vectors import EmotionVector, EmotionVectors

# per model (by id, dropped when the model is): the last context run, as (the model, a weak
# reference), (its token ids, the steering signature it ran under) and its key/value cache
_CONTEXTS: dict[int, tuple[weakref.ref, tuple, object]] = {}


@dataclass
class Generation:
    """A generated assistant turn: its text, the episode with it appended, and per-token read-outs."""

    text: str
    episode: Episode
    token_ids: list[int]
    tokens: list[str]
    readouts: pd.DataFrame  # one row per generated token: token, then z of every emotion at ``layer``
    layer: int
    steering: str

    def __repr__(self) -> str:
        return f"Generation({len(self.tokens)} tokens, steering={self.steering!r}, text={self.text[:60]!r}…)"


def generate(
    model: Model,
    episode: Episode,
    vectors: EmotionVectors,
    max_new_tokens: int = 80,
    after_message: int | None = None,
    layer: int | None = None,
    on_token: Callable[[str, dict[str, float]], None] | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    steer: EmotionVector | str | torch.Tensor | None = None,
    strength: float | None = None,
) -> Generation:
    """Write the assistant's next turn after ``episode`` (or after message ``after_message``),
    token by token, reading every new token's residual stream at ``layer`` as it is written.

    Runs under whatever :func:`steer` block is active, so ``with ex.steer(...): ex.generate(...)``
    is a steered generation, context included. ``steer`` (a vector or an emotion name) with
    ``strength`` steers only the written turn, from its turn header on, at the model's read-out
    layer, over an unsteered context: the context's key/value cache is kept (the last one per
    model, in memory) and reused when the next call starts from the same context, so comparing
    several steerings of one turn runs the context once. ``on_token(text, {emotion: z})`` is
    called for each new token (to stream it into a widget). Greedy by default; ``temperature`` > 0
    samples with ``seed``.
    """
    model.require_local("live generation")
    vectors.check_model(model)
    (layer,) = model.resolve_layers(layer)
    where = episode.source or episode.id
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ExplorerError(f"generate: max_new_tokens is {max_new_tokens!r}; ask for a whole number >= 1")
    if after_message is not None and (
        isinstance(after_message, bool)
        or not isinstance(after_message, int)
        or not 0 <= after_message < len(episode.messages)
    ):
        raise ExplorerError(
            f"{where}: after_message is {after_message!r}; use a message index 0 … {len(episode.messages) - 1}"
        )
    if (steer is None) != (strength is None):
        raise ExplorerError("generate: give steer= and strength= together, e.g. steer='desperate', strength=0.05")
    keep = episode.messages if after_message is None else episode.messages[: after_message + 1]
    text = render_text(model, keep, reply=True, source=where)
    ids = model.tokenize(text, templated=model.chat)["input_ids"]
    # the context (the episode so far) and the turn (its header, then the generated tokens)
    context_ids = model.tokenize(render_text(model, keep, source=where), templated=model.chat)["input_ids"]
    split = next((i for i, (a, b) in enumerate(zip(ids, context_ids)) if a != b), min(len(ids), len(context_ids)))
    split = max(1, min(split, len(ids) - 1))
    turn = contextlib.nullcontext()
    if steer is not None:
        turn = steer_block(model, steer, strength, positions=slice(split, None), vectors=vectors)
    if len(ids) + max_new_tokens > model.context_limit:
        raise ExplorerError(
            f"{where}: {len(ids)} + {max_new_tokens} tokens exceed the {model.context_limit} '{model.name}' reads"
        )

    captured: list[torch.Tensor] = []
    handle = model.torch_layers[layer].register_forward_hook(
        lambda module, args, output: captured.append(layer_output(output)[0, -1].float())
    )
    stops = _stop_ids(model)
    directions = vectors.at(layer)
    mean, std = vectors.z_offset[layer], vectors.z_scale[layer]
    generator = torch.Generator().manual_seed(seed)
    new_ids, rows = [], []
    position = len(ids)
    try:
        with torch.inference_mode():
            cache = _context_cache(model, ids[:split])
        with turn, torch.inference_mode():
            steering = model.steering.describe()
            out = model.hf(
                input_ids=torch.tensor([ids[split:]]),
                cache=cache,
                use_cache=True,
                cache_position=torch.arange(split, len(ids)),
                logits_to_keep=1,
            )
            for _ in range(max_new_tokens):
                logits = out.logits[0, -1].float()
                if temperature > 0:
                    probs = torch.softmax(logits / temperature, -1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    token = int(logits.argmax())
                if token in stops:
                    break
                new_ids.append(token)
                cache = getattr(out, "cache", None) or out.past_key_values
                captured.clear()
                out = model.hf(
                    input_ids=torch.tensor([[token]]),
                    cache=cache,
                    use_cache=True,
                    cache_position=torch.tensor([position]),
                    logits_to_keep=1,
                )
                position += 1
                # the residual of the new token, read as it enters the context
                z = ((directions @ captured[-1]) - mean) / std
                piece = model.tokenizer.decode([token])
                values = {e: float(z[i]) for i, e in enumerate(vectors.emotions)}
                rows.append({"token": piece, **values})
                if on_token:
                    on_token(piece, values)
    finally:
        handle.remove()
    generated = model.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
    attempts = [m.attempt for m in keep if m.attempt is not None]
    reply = Message("assistant", generated or "…", (max(attempts) + 1) if attempts else None)
    new_episode = Episode(
        id=f"{episode.id}+generated",
        title=f"{episode.title} (generated turn)",
        description=episode.description,
        messages=(*keep, reply),
        control=None,
        source=episode.source,
    )
    return Generation(
        text=generated,
        episode=new_episode,
        token_ids=new_ids,
        tokens=[r["token"] for r in rows],
        readouts=pd.DataFrame(rows, columns=["token", *vectors.emotions]),
        layer=layer,
        steering=steering + (" (written turn only)" if steer is not None else ""),
    )


def _context_cache(model: Model, ids: list[int]):
    """A copy of the key/value cache of ``ids`` run under the model's active steering: the kept
    one when the last context run for this model had the same ids and steering, else run now."""
    key = (tuple(ids), model.steering.signature())
    kept = _CONTEXTS.get(id(model))
    if kept is None or kept[0]() is not model or kept[1] != key:
        out = model.hf(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
        if kept is None or kept[0]() is not model:
            weakref.finalize(model, _CONTEXTS.pop, id(model), None)
        kept = (weakref.ref(model), key, getattr(out, "cache", None) or out.past_key_values)
        _CONTEXTS[id(model)] = kept
    return copy.deepcopy(kept[2])  # running the turn extends the cache


def _stop_ids(model: Model) -> set[int]:
    stops = set()
    eos = model.tokenizer.eos_token_id
    if eos is not None:
        stops.update(eos if isinstance(eos, list) else [eos])
    for name in ("<|im_end|>", "<end_of_turn>", "<|endoftext|>"):
        token = model.tokenizer.convert_tokens_to_ids(name)
        if isinstance(token, int) and token != model.tokenizer.unk_token_id:
            stops.add(token)
    return stops
