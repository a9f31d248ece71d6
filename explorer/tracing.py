"""One forward pass over an episode → every token's read-out on every emotion at chosen layers.

The episode is rendered once and run through the model once. Inside the pass each requested
layer's residual stream is projected onto all emotion vectors at once, so what is kept grows as
tokens × emotions × layers, never tokens × width × layers; the pass stops after the deepest
requested layer (the LM head is never computed). Traces are cached on disk by a hash of
(model, vectors, episode, layers), written atomically and rebuilt when damaged.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import cache
from .episodes import Episode, render
from .errors import ExplorerError
from .hooks import apply_in_trace
from .memory import release_freed_memory
from .models import Model, layer_output
from .remote import pass_failures
from .stats import attempt_means, group_mean_ci
from .vectors import EmotionVectors

log = logging.getLogger(__name__)
TOKEN_COLUMNS = ["token_index", "message_index", "role", "attempt", "token"]
TRACE_FORMAT = 2  # part of every cache key: bump when rendering or the stored arrays change


@dataclass(kw_only=True)
class IntensityTrace:
    """Read-outs of one episode: ``raw`` and ``z`` are (tokens, emotions, layers) float32 arrays.

    ``tokens`` is the token table (message index, role, attempt, outcome, token text, character
    span); ``layers`` the layers read; ``emotions`` the columns.
    """

    episode: Episode
    model_name: str
    emotions: list[str]
    layers: list[int]
    tokens: pd.DataFrame
    raw: np.ndarray
    z: np.ndarray
    text: str = ""

    def _layer_index(self, layer: int | None) -> int:
        layer = self.default_layer if layer is None else layer
        if layer not in self.layers:
            raise ExplorerError(f"layer {layer} was not traced; this trace has layers {self.layers}")
        return self.layers.index(layer)

    @property
    def default_layer(self) -> int:
        from .models import default_layer

        n_layers = int(self.tokens.attrs.get("n_layers", max(self.layers) + 1))
        wanted = default_layer(n_layers)
        return wanted if wanted in self.layers else self.layers[-1]

    def readouts(self, layer: int | None = None, z: bool = True) -> pd.DataFrame:
        """The token table with one column per emotion at ``layer`` (the CSV contract)."""
        values = (self.z if z else self.raw)[:, :, self._layer_index(layer)]
        frame = self.tokens[TOKEN_COLUMNS].copy()
        for i, emotion in enumerate(self.emotions):
            frame[emotion] = values[:, i]
        return frame

    def emotion(self, emotion: str, layer: int | None = None, z: bool = True) -> np.ndarray:
        if emotion not in self.emotions:
            raise ExplorerError(f"emotion '{emotion}' was not traced; this trace has: {', '.join(self.emotions)}")
        return (self.z if z else self.raw)[:, self.emotions.index(emotion), self._layer_index(layer)]

    def attempt_means(self, emotion: str, layer: int | None = None, roles: Sequence[str] = ("assistant",)) -> pd.Series:
        """Mean z of ``emotion`` at ``layer`` per attempt over the content tokens of ``roles``
        (index: attempt) — the per-attempt curve that :func:`explorer.compare` tests."""
        return attempt_means(self.tokens, self.emotion(emotion, layer)[:, None], list(roles))[0]

    def content_mask(self) -> np.ndarray:
        """True for the tokens that carry message text. False for chat-template tokens (turn
        headers, special tokens) and for the first token, an attention sink whose read-out can be
        hundreds of z; the widgets leave these out of their numbers, colours and axes by default."""
        if "in_content" in self.tokens:
            mask = self.tokens["in_content"].to_numpy(dtype=bool).copy()
        else:
            mask = np.ones(len(self.tokens), dtype=bool)
        mask[:1] = False
        return mask

    def turn_means(
        self, emotion: str, layer: int | None = None, include_template: bool = False, level: float = 0.95
    ) -> pd.DataFrame:
        """Mean z of ``emotion`` at ``layer`` per message (turn) with its ``level`` confidence interval.

        One row per message that has tokens (index: message_index) with ``role``, ``attempt``,
        ``outcome``, its token span ``start``..``end`` (end exclusive), ``n`` tokens averaged,
        ``mean``, ``ci_low`` and ``ci_high``. Only content tokens (:meth:`content_mask`) count
        unless ``include_template``. An assistant turn's mean over its content tokens is the
        attempt's value in :meth:`attempt_means` when the attempt has one assistant message.

        The interval is Student's t over the turn's tokens, taken as independent draws. Neighbouring
        tokens are correlated, so it is narrower than the turn's real uncertainty: read it as the
        spread of the turn, not as a test (:func:`explorer.compare` runs the tests).
        """
        values = self.emotion(emotion, layer).astype(np.float64)
        keep = np.ones(len(values), dtype=bool) if include_template else self.content_mask()
        table = self.tokens
        spans = table.groupby("message_index")["token_index"].agg(["min", "max"])
        stats = group_mean_ci(table["message_index"].to_numpy()[keep], values[keep], level).reindex(spans.index)
        frame = pd.DataFrame(
            {
                "role": [self.episode.messages[int(m)].role for m in spans.index],
                "attempt": pd.array([self.episode.messages[int(m)].attempt for m in spans.index], dtype="Int64"),
                "outcome": [self.episode.messages[int(m)].outcome for m in spans.index],
                "start": spans["min"].to_numpy(),
                "end": spans["max"].to_numpy() + 1,
                "n": stats["n"].fillna(0).astype(int).to_numpy(),
                "mean": stats["mean"].to_numpy(),
                "ci_low": stats["ci_low"].to_numpy(),
                "ci_high": stats["ci_high"].to_numpy(),
            },
            index=spans.index,
        )
        frame.index.name = "message_index"
        return frame

    def to_csv(self, path: str | Path, layer: int | None = None) -> None:
        self.readouts(layer).to_csv(path, index=False, float_format="%.5g")

    def to_parquet(self, path: str | Path) -> None:
        """Long format: one row per token and layer, raw and z columns per emotion."""
        frames = []
        for j, layer in enumerate(self.layers):
            frame = self.tokens[TOKEN_COLUMNS + ["outcome"]].copy()
            frame.insert(1, "layer", layer)
            for i, emotion in enumerate(self.emotions):
                frame[emotion] = self.z[:, i, j]
                frame[f"{emotion}_raw"] = self.raw[:, i, j]
            frames.append(frame)
        pd.concat(frames, ignore_index=True).to_parquet(path, index=False)

    def save(self, path: str | Path) -> Path:
        """One compressed file with everything (episode, tokens, raw and z read-outs): a trace
        that opens without the model, e.g. to ship a bigger model's curves."""
        path = Path(path)
        meta = {
            "format": TRACE_FORMAT,
            "model": self.model_name,
            "emotions": self.emotions,
            "layers": self.layers,
            "n_layers": int(self.tokens.attrs.get("n_layers", max(self.layers) + 1)),
            "episode": self.episode.to_dict(),
        }
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            raw=self.raw.astype(np.float32),
            z=self.z.astype(np.float32),
            tokens=self.tokens.to_json(orient="split"),
            text=self.text,
            meta=json.dumps(meta),
        )
        cache.write_file_atomic(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> IntensityTrace:
        from .episodes import parse_episode

        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                tokens = pd.read_json(io.StringIO(str(data["tokens"])), orient="split")
                raw, z, text = data["raw"], data["z"], str(data["text"])
        except FileNotFoundError:
            raise ExplorerError(f"{path}: no such trace file") from None
        except Exception as exc:
            reason = type(exc).__name__
            raise ExplorerError(f"{path}: not a trace file written by IntensityTrace.save ({reason})") from None
        tokens["attempt"] = tokens["attempt"].astype("Int64")
        tokens.attrs["n_layers"] = meta["n_layers"]
        episode = parse_episode(meta["episode"], source=str(path))
        return cls(
            episode=episode,
            model_name=meta["model"],
            emotions=list(meta["emotions"]),
            layers=list(meta["layers"]),
            tokens=tokens,
            raw=raw,
            z=z,
            text=text,
        )

    def __repr__(self) -> str:
        return (
            f"IntensityTrace({self.episode.id!r}, {self.model_name!r}, {len(self.tokens)} tokens, "
            f"{len(self.emotions)} emotions, layers {self.layers})"
        )


def _trace_key(model: Model, vectors: EmotionVectors, episode: Episode, layers: list[int]) -> str:
    digest = hashlib.sha256()
    digest.update(f"{TRACE_FORMAT}\0{model.name}\0{model.sha256}\0{layers}\0".encode())
    steered = model.steering.signature()
    if steered:  # a steered trace is another trace
        digest.update(f"steering:{steered}\0".encode())
    digest.update(vectors.directions.numpy().tobytes())
    digest.update(vectors.z_offset.numpy().tobytes() + vectors.z_scale.numpy().tobytes())
    digest.update(episode.canonical_json().encode())
    return digest.hexdigest()[:32]


def _cache_path(key: str) -> Path:
    return cache.cache_root() / "traces" / f"{key}.npz"


def _read_cached(path: Path, key: str, episode: Episode, model: Model, vectors: EmotionVectors, layers: list[int]):
    """The cached read-outs at ``path`` when the file says it holds ``key`` (the hash of model,
    vectors, episode and layers) and its arrays fit the episode's tokens, the vectors and the
    layers; anything else (damaged, another trace's file, an older format) is None: recompute."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = str(data["key"]) if "key" in data.files else None
            raw = data["raw"]
            tokens = pd.read_json(io.StringIO(str(data["tokens"])), orient="split")
            text = str(data["text"])
    except Exception:  # a damaged file of any kind is rebuilt, never trusted
        log.warning("trace cache %s is damaged; recomputing it", path)
        return None
    fits = raw.shape == (len(tokens), len(vectors), len(layers)) and int(tokens["message_index"].max()) < len(
        episode.messages
    )
    if stored != key or not fits:  # a file from before keys were stored is simply recomputed
        (log.info if stored is None else log.warning)("trace cache %s does not hold this trace; recomputing it", path)
        return None
    tokens["attempt"] = tokens["attempt"].astype("Int64")
    return _assemble(episode, model, vectors, layers, tokens, raw, text)


def _write_cached(path: Path, key: str, raw: np.ndarray, rendered) -> None:
    """Keep a trace for next time, its key inside the file; a cache that cannot be written
    (disk full, read-only) costs a recomputation later, never the trace."""
    buffer = io.BytesIO()
    np.savez(buffer, key=key, raw=raw, tokens=rendered.tokens.to_json(orient="split"), text=rendered.text)
    try:
        cache.write_file_atomic(path, buffer.getvalue())
    except OSError as exc:
        log.warning("trace not cached (%s: %s)", path.parent, exc.strerror or type(exc).__name__)


def _assemble(episode, model, vectors, layers, tokens, raw, text) -> IntensityTrace:
    mean = vectors.z_offset[layers].T.numpy()[None]  # (1, emotions, layers)
    std = vectors.z_scale[layers].T.numpy()[None]
    tokens.attrs["n_layers"] = model.n_layers
    return IntensityTrace(
        episode=episode,
        model_name=model.name,
        emotions=list(vectors.emotions),
        layers=list(layers),
        tokens=tokens,
        raw=raw,
        z=((raw - mean) / std).astype(np.float32),
        text=text,
    )


TRACES_DIR = Path(__file__).parent / "data" / "traces"


def shipped_traces(model_name: str | None = None) -> dict[str, list[str]]:
    """Precomputed traces that ship with the package: {model: [episode ids]}."""
    found: dict[str, list[str]] = {}
    for path in sorted(TRACES_DIR.glob("*/*.npz")):
        found.setdefault(path.parent.name, []).append(path.stem)
    return found if model_name is None else {model_name: found.get(model_name, [])}


def load_shipped_trace(model_name: str, episode_id: str) -> IntensityTrace:
    """A shipped trace (read-outs at the model's default layer): a bigger model's curves with no
    model loaded. ``shipped_traces()`` lists them; ``explorer ship-traces`` writes them."""
    path = TRACES_DIR / model_name / f"{episode_id}.npz"
    if not path.is_file():
        have = shipped_traces().get(model_name, [])
        listed = f"shipped: {', '.join(have)}" if have else f"models with shipped traces: {', '.join(shipped_traces())}"
        raise ExplorerError(f"no shipped trace of '{episode_id}' for '{model_name}'; {listed}")
    return IntensityTrace.load(path)


def readout_pass(model: Model, input_ids: torch.Tensor, directions: dict[int, torch.Tensor]) -> np.ndarray:
    """One forward pass projecting each token's residual stream at each layer ``L`` onto the rows
    of ``directions[L]`` (k, width); returns (tokens, k, layers), stopped after the deepest layer.

    Only the projections leave the pass, which is what travels back from NDIF for remote models.
    The model's active steering blocks apply (``model.steering``): local ones through their hooks
    (their addition at a read layer itself is added back here, since nnsight reads before hooks
    run), remote ones inside the trace.
    """
    stack = model.steering
    n = input_ids.shape[-1]
    deepest = max(directions)
    steer_here = {layer for layer in stack.in_trace_layers() if layer <= deepest}
    projections = {}
    # use_cache=False: no key/value cache is kept for the layers read (164 MB over 3,564 tokens, SmolLM2)
    with pass_failures(model), torch.inference_mode(), model.trace(input_ids, use_cache=False) as tracer:
        for layer in sorted(set(directions) | steer_here):
            envoy = model.layers[layer]
            if layer in steer_here:
                apply_in_trace(envoy, stack.added(layer, n, in_trace=True))
            if layer in directions:
                hidden = layer_output(envoy.output)[0]
                projections[layer] = (hidden @ directions[layer].T.to(hidden.dtype)).save()
        tracer.stop()
    out = []
    for layer in sorted(directions):
        projection = projections[layer].float()
        extra = stack.added(layer, n)
        if extra is not None:
            projection = projection + extra @ directions[layer].T.float()
        out.append(projection)
    result = torch.stack(out, -1).numpy()
    release_freed_memory()  # the pass's activations, freed but still held by the C heap
    return result


def rendered_ids(model: Model, episode: Episode):
    """Render ``episode`` and refuse, with a one-line reason, one longer than the model's context."""
    rendered = render(model, episode)
    n = len(rendered.input_ids)
    if n > model.context_limit:
        raise ExplorerError(
            f"{episode.source or episode.id}: renders to {n} tokens but '{model.name}' reads at most "
            f"{model.context_limit}; shorten the episode or split it into parts"
        )
    return rendered, torch.tensor([rendered.input_ids])


def trace(
    model: Model,
    episode: Episode,
    vectors: EmotionVectors,
    layers: Sequence[int] | str | int | None = "all",
    use_cache: bool = True,
) -> IntensityTrace:
    """Read every token of ``episode`` on every emotion in one forward pass.

    Args:
        model: from :func:`explorer.load_model`.
        episode: from :func:`explorer.load_episode` (a shipped id or your own file).
        vectors: from :func:`explorer.load_vectors` for the same model.
        layers: "all" (default: the pass costs about one forward either way), an int, a list of
            ints, or None for the model's read-out layer (:meth:`Model.resolve_layers`); fewer,
            shallower layers stop the pass earlier.
        use_cache: reuse a trace computed before for the same model, vectors, episode and layers.
    """
    if not isinstance(episode, Episode):
        raise ExplorerError(
            f"trace: episode is a {type(episode).__name__}; pass ex.load_episode({episode!r}) instead"
            if isinstance(episode, str | Path)
            else f"trace: episode is a {type(episode).__name__}; pass one from ex.load_episode(...)"
        )
    vectors.check_model(model)
    layers = model.resolve_layers(layers)
    key = _trace_key(model, vectors, episode, layers)
    path = _cache_path(key)
    if use_cache and path.is_file():
        cached = _read_cached(path, key, episode, model, vectors, layers)
        if cached is not None:
            return cached
    rendered, input_ids = rendered_ids(model, episode)
    raw = readout_pass(model, input_ids, {layer: vectors.directions[layer] for layer in layers})
    _write_cached(path, key, raw, rendered)
    return _assemble(episode, model, vectors, layers, rendered.tokens, raw, rendered.text)
