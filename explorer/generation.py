"""Live generation: the assistant's next turn, token by token, each new token read out as it is written.

Runs under the model's active steering (``with ex.steer(...): ex.generate(...)`` is a steered
generation) and records which steering was active.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from .episodes import Episode, Message, render_text
from .errors import ExplorerError
from .models import Model, layer_output
from .vectors import EmotionVectors


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
) -> Generation:
    """Write the assistant's next turn after ``episode`` (or after message ``after_message``),
    token by token, reading every new token's residual stream at ``layer`` as it is written.

    Runs under whatever :func:`steer` block is active, so ``with ex.steer(...): ex.generate(...)``
    is a steered generation. ``on_token(text, {emotion: z})`` is called for each new token (to
    stream it into a widget). Greedy by default; ``temperature`` > 0 samples with ``seed``.
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
    keep = episode.messages if after_message is None else episode.messages[: after_message + 1]
    text = render_text(model, keep, reply=True)
    ids = model.tokenize(text, templated=model.chat)["input_ids"]
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
    new_ids, rows, cache = [], [], None
    position = len(ids)
    try:
        with torch.inference_mode():
            out = model.hf(input_ids=torch.tensor([ids]), use_cache=True)
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
        steering=model.steering.describe(),
    )


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
