"""Emotion vectors: the recipe, calibration, and one portable object to hold them.

Recipe (after Sofroniew et al. 2026, adapted to short texts in seven registers):
1. each text's residual stream is averaged over its tokens from ``min(offset, (n - 1) // 2)`` on,
   at every layer;
2. an emotion's direction is either its mean over texts minus the mean over all emotions, with the
   top principal components of neutral texts' token activations (``denoise_variance`` of their
   variance) projected out — the paper's "mean_difference" — or that contrast multiplied by the
   inverse of the within-emotion covariance shrunk towards the identity ("shrinkage_lda", the
   default: what varies between texts of one emotion, such as register, counts less);
3. each direction is scaled to unit length.
Calibration is stored with the vectors: the centre and scale of each read-out (``grand_mean``:
centred on the training texts' grand mean, divided by one neutral-token SD per layer shared by every
emotion; ``neutral_z``: each vector's own mean and SD over neutral tokens) and each layer's mean
residual norm (for steering strength).
"""

from __future__ import annotations

import difflib
import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from safetensors.torch import save as save_bytes

from . import __version__, cache
from .activations import Moments, text_means, token_moments
from .corpus import Corpus, Story, load_corpus, story_warnings
from .errors import ExplorerError
from .models import Model

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent / "data" / "vectors"
FORMAT = "emotion-vectors/1"
MIN_READ_TOKENS = 4  # score_texts warns when a text's read-out averages fewer tokens than this
MIN_STORIES = 5  # build_vectors warns when an emotion has fewer stories than this


@dataclass(frozen=True)
class Recipe:
    """The knobs of the recipe; stored in every vector file.

    Attributes:
        offset: tokens skipped at the start of each text before averaging. The paper skips 50 of
            long stories so the emotion has become apparent; our stories are 60-150 words, so 10.
            Raise it for long stories of your own.
        denoise_variance: fraction of the neutral texts' variance whose top principal
            components are projected out. 0 switches denoising off (the paper: findings hold).
            Used by "mean_difference" directions; "shrinkage_lda" whitens by the texts' own
            within-emotion covariance instead.
        readout: how z-scores are calibrated: "grand_mean" (centred on the mean of all emotions'
            texts, one scale shared by the emotions at a layer, so the calibration never changes
            which emotion is highest) or "neutral_z" (each emotion's own neutral mean and SD, as
            files built before corpus v2 do). Chosen by leave-one-register-out accuracy
            (docs/VECTORS.md).
        directions: "shrinkage_lda" (the default: each emotion's contrast whitened by the
            within-emotion covariance of the texts, shrunk towards the identity; see
            :func:`lda_directions`) or "mean_difference" (the paper's recipe: contrast, neutral-PC
            denoising, normalise). On SmolLM2-135M, leave-one-register-out nearest-vector accuracy
            at the rule layer is 68.7% against 52.8% (40 emotions, grand-mean read-out).
        shrinkage: for "shrinkage_lda", the ridge added to the within-emotion covariance as a
            fraction of its mean variance (0.3; larger moves towards "mean_difference" without
            denoising).

    Files built before these choices existed record neither ``readout`` nor ``directions``; read a
    file's recipe with :meth:`Recipe.from_metadata`, which fills in what those files used.
    """

    offset: int = 10
    denoise_variance: float = 0.5
    readout: str = "grand_mean"
    directions: str = "shrinkage_lda"
    shrinkage: float = 0.3

    # What a file that records no value for a knob was built with (files from before corpus v2).
    LEGACY = {"readout": "neutral_z", "directions": "mean_difference"}

    @classmethod
    def from_metadata(cls, metadata: dict) -> Recipe:
        """The recipe a vector file was built with (its ``metadata["recipe"]``); knobs that older
        files do not record take the values those files were built with, not today's defaults."""
        recorded = dict(metadata.get("recipe", {}))
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(recorded) - known)
        if unknown:
            raise ExplorerError(f"vector metadata: unknown recipe setting {unknown[0]!r}; rebuild the file")
        return cls(**{**cls.LEGACY, **recorded})

    def __post_init__(self) -> None:
        if self.readout not in ("grand_mean", "neutral_z"):
            raise ExplorerError(f"recipe: readout {self.readout!r}; use 'grand_mean' or 'neutral_z'")
        if self.directions not in ("mean_difference", "shrinkage_lda"):
            raise ExplorerError(f"recipe: directions {self.directions!r}; use 'mean_difference' or 'shrinkage_lda'")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ExplorerError(f"recipe: offset {self.offset!r}; use a whole number of tokens >= 0")
        if not 0 <= float(self.denoise_variance) < 1:
            raise ExplorerError(f"recipe: denoise_variance {self.denoise_variance!r}; use a fraction in [0, 1)")
        if not 0 < float(self.shrinkage) < float("inf"):
            raise ExplorerError(f"recipe: shrinkage {self.shrinkage!r}; use a positive number (0.3 by default)")


@dataclass
class Extraction:
    """What the forward passes produce; everything else is linear algebra on it."""

    story_means: torch.Tensor  # (stories, layers, width), float64
    labels: list[str]
    topics: list[int | None]
    neutral_mean: torch.Tensor  # (layers, width)
    neutral_covariance: torch.Tensor  # (layers, width, width)
    neutral_norm: torch.Tensor  # (layers,) mean residual norm over neutral tokens
    neutral_tokens: int

    @property
    def emotions(self) -> list[str]:
        return list(dict.fromkeys(self.labels))


@dataclass(frozen=True)
class EmotionVector:
    """One direction per layer. Combine like numbers: ``v["desperate"] - v["calm"]``, ``0.5 * v``."""

    name: str
    directions: torch.Tensor  # (layers, width)
    residual_norm: torch.Tensor | None = field(default=None, repr=False)  # (layers,), for steering

    def at(self, layer: int) -> torch.Tensor:
        return self.directions[layer]

    def unit(self) -> EmotionVector:
        norms = self.directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return EmotionVector(f"unit({self.name})", self.directions / norms, self.residual_norm)

    def _combine(self, other: EmotionVector, sign: float, symbol: str) -> EmotionVector:
        if not isinstance(other, EmotionVector):
            return NotImplemented
        if other.directions.shape != self.directions.shape:
            raise ExplorerError(
                f"cannot combine '{self.name}' {tuple(self.directions.shape)} with "
                f"'{other.name}' {tuple(other.directions.shape)}: they come from different models"
            )
        return EmotionVector(
            f"{self.name} {symbol} {other.name}", self.directions + sign * other.directions, self.residual_norm
        )

    def __add__(self, other: EmotionVector) -> EmotionVector:
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: EmotionVector) -> EmotionVector:
        return self._combine(other, -1.0, "-")

    def __mul__(self, factor: float) -> EmotionVector:
        if isinstance(factor, bool) or not isinstance(factor, int | float | np.number):
            raise ExplorerError(
                f"cannot multiply '{self.name}' by {type(factor).__name__} {factor!r}; use a number, e.g. 0.5 * v"
            )
        if not np.isfinite(float(factor)):
            raise ExplorerError(f"cannot multiply '{self.name}' by {factor}; use a finite number")
        return EmotionVector(f"{factor:g}*{self.name}", self.directions * float(factor), self.residual_norm)

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> EmotionVector:
        if isinstance(divisor, int | float | np.number) and not isinstance(divisor, bool) and float(divisor) == 0:
            raise ExplorerError(f"cannot divide '{self.name}' by zero")
        return self * (1.0 / divisor if isinstance(divisor, int | float | np.number) else divisor)

    def __neg__(self) -> EmotionVector:
        return EmotionVector(f"-{self.name}", -self.directions, self.residual_norm)


class EmotionVectors:
    """All emotions' unit vectors at every layer of one model, with their calibration.

    ``vectors["desperate"]`` is an :class:`EmotionVector`; ``vectors.at(layer)`` the
    (emotions, width) matrix at one layer; ``vectors.readout(hidden, layer)`` projects
    residual streams onto every emotion, raw or as z-scores against neutral text.
    """

    def __init__(
        self,
        *,
        directions: torch.Tensor,
        emotions: Sequence[str],
        neutral_mean: torch.Tensor,
        neutral_std: torch.Tensor,
        residual_norm: torch.Tensor,
        grand_mean: torch.Tensor,
        metadata: dict,
        null_directions: torch.Tensor | None = None,
        z_offset: torch.Tensor | None = None,
        z_scale: torch.Tensor | None = None,
    ):
        self.directions = directions.float()  # (layers, emotions, width)
        self.emotions = list(emotions)
        self.neutral_mean = neutral_mean.float()  # (layers, emotions)
        self.neutral_std = neutral_std.float()  # (layers, emotions)
        self.residual_norm = residual_norm.float()  # (layers,)
        self.grand_mean = grand_mean.float()  # (layers, width): mean over all emotions' stories
        self.metadata = dict(metadata)
        # (layers, n, width): the recipe on shuffled story labels; the stricter null for comparisons
        self.null_directions = None if null_directions is None else null_directions.float()
        self._check_shapes()
        offset, scale = self._calibration()
        self.z_offset = offset if z_offset is None else z_offset.float()  # (layers, emotions)
        self.z_scale = scale if z_scale is None else z_scale.float()  # (layers, emotions)

    def _check_shapes(self) -> None:
        """The metadata and every tensor must agree, so a column can never be mislabelled."""
        layers, k, width = self.directions.shape
        where = f"vectors of '{self.metadata.get('model', '?')}'"
        if not all(isinstance(e, str) and e for e in self.emotions) or len(set(self.emotions)) != len(self.emotions):
            raise ExplorerError(f"{where}: 'emotions' must be distinct non-empty names, one per direction")
        if len(self.emotions) != k:
            raise ExplorerError(f"{where}: {len(self.emotions)} emotion names for {k} directions; rebuild the file")
        expected = {
            "neutral_mean": (layers, k),
            "neutral_std": (layers, k),
            "residual_norm": (layers,),
            "grand_mean": (layers, width),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ExplorerError(
                    f"{where}: '{name}' has shape {tuple(getattr(self, name).shape)}, expected {shape}; "
                    "rebuild the file"
                )
        for name in ("directions", "neutral_mean", "neutral_std", "residual_norm", "grand_mean"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise ExplorerError(f"{where}: '{name}' holds NaN or infinite values; rebuild the file")
        if bool((self.neutral_std <= 0).any()):
            raise ExplorerError(f"{where}: 'neutral_std' has zeros, so z-scores would be infinite; rebuild the file")

    @property
    def readout_mode(self) -> str:
        """How z-scores are calibrated (the recipe's ``readout``; see :class:`Recipe`)."""
        return self.metadata.get("recipe", {}).get("readout", "neutral_z")

    def _calibration(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(offset, scale), each (layers, emotions): z = (h · v − offset) / scale."""
        if self.readout_mode == "grand_mean":
            offset = torch.einsum("lew,lw->le", self.directions, self.grand_mean)
            common = self.neutral_std.pow(2).mean(1, keepdim=True).sqrt()  # one scale for every emotion
            return offset, common.expand_as(offset).clone()
        return self.neutral_mean, self.neutral_std

    # --- shape and access -------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.directions.shape[0]

    @property
    def width(self) -> int:
        return self.directions.shape[2]

    @property
    def model_name(self) -> str:
        return self.metadata.get("model", "?")

    def __len__(self) -> int:
        return len(self.emotions)

    def __iter__(self) -> Iterator[str]:
        return iter(self.emotions)

    def __contains__(self, emotion: object) -> bool:
        return emotion in self.emotions

    def index(self, emotion: str) -> int:
        if emotion not in self.emotions:
            close = difflib.get_close_matches(str(emotion).strip().lower(), self.emotions, n=3, cutoff=0.7)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise ExplorerError(
                f"no vector for emotion {emotion!r}; {hint}these vectors have: {', '.join(self.emotions)}"
            )
        return self.emotions.index(emotion)

    def __getitem__(self, emotion: str) -> EmotionVector:
        return EmotionVector(emotion, self.directions[:, self.index(emotion)], self.residual_norm)

    def at(self, layer: int) -> torch.Tensor:
        if not 0 <= layer < self.n_layers:
            raise ExplorerError(f"layer {layer} does not exist: these vectors have layers 0 … {self.n_layers - 1}")
        return self.directions[layer]

    def select(self, emotions: Sequence[str]) -> EmotionVectors:
        idx = [self.index(e) for e in emotions]
        return EmotionVectors(
            directions=self.directions[:, idx],
            emotions=list(emotions),
            neutral_mean=self.neutral_mean[:, idx],
            neutral_std=self.neutral_std[:, idx],
            residual_norm=self.residual_norm,
            grand_mean=self.grand_mean,
            metadata=self.metadata,
            null_directions=self.null_directions,
            z_offset=self.z_offset[:, idx],
            z_scale=self.z_scale[:, idx],
        )

    def with_directions(self, directions: torch.Tensor, names: Sequence[str]) -> EmotionVectors:
        """These vectors plus extra read-out directions (e.g. random ones as a baseline) that a
        single trace reads in the same pass.

        Args:
            directions: (k, width) — the same at every layer — or (layers, k, width).
            names: one column name per direction; must not clash with an emotion.

        The extra directions have no neutral calibration (mean 0, SD 1), so their z-scores equal
        their raw read-outs: compare them with each other in raw units, as ``compare`` does.
        """
        directions = torch.as_tensor(directions).float()
        if directions.dim() == 2:
            directions = directions.expand(self.n_layers, -1, -1)
        names = list(names)
        if (
            directions.shape[0] != self.n_layers
            or directions.shape[2] != self.width
            or directions.shape[1] != len(names)
        ):
            raise ExplorerError(
                f"with_directions: got shape {tuple(directions.shape)} for {len(names)} names; give "
                f"({len(names)}, {self.width}) or ({self.n_layers}, {len(names)}, {self.width})"
            )
        clash = sorted(set(names) & set(self.emotions))
        if clash or len(set(names)) != len(names):
            raise ExplorerError(f"with_directions: names must be new and distinct; '{(clash or names)[0]}' is not")
        zeros, ones = torch.zeros(self.n_layers, len(names)), torch.ones(self.n_layers, len(names))
        return EmotionVectors(
            directions=torch.cat([self.directions, directions], dim=1),
            emotions=self.emotions + names,
            neutral_mean=torch.cat([self.neutral_mean, zeros], dim=1),
            neutral_std=torch.cat([self.neutral_std, ones], dim=1),
            residual_norm=self.residual_norm,
            grand_mean=self.grand_mean,
            metadata=self.metadata,
            null_directions=self.null_directions,
            z_offset=torch.cat([self.z_offset, zeros], dim=1),
            z_scale=torch.cat([self.z_scale, ones], dim=1),
        )

    def __repr__(self) -> str:
        return f"EmotionVectors({self.model_name!r}, {len(self)} emotions, {self.n_layers} layers, width {self.width})"

    # --- read-outs -------------------------------------------------------------------
    def readout(self, hidden: torch.Tensor, layer: int, z: bool = True) -> torch.Tensor:
        """Project residual streams ``hidden[..., width]`` on every emotion at ``layer``.

        Raw read-outs are dot products with the unit vectors. z-scores follow the recipe's
        ``readout``: "grand_mean" (the default) centres on the mean of all emotions' texts (the
        recipe's own centring) and divides by one scale shared by every emotion at the layer (the
        RMS of their SDs over neutral tokens), so which emotion is highest is never changed by the
        calibration; "neutral_z" (files built before) subtracts each emotion's mean over neutral
        tokens and divides by its own SD.
        """
        raw = hidden.float() @ self.at(layer).T
        if not z:
            return raw
        return (raw - self.z_offset[layer]) / self.z_scale[layer]

    def cosine_matrix(self, layer: int) -> pd.DataFrame:
        m = self.at(layer)
        m = m / m.norm(dim=-1, keepdim=True)
        return pd.DataFrame((m @ m.T).numpy(), index=self.emotions, columns=self.emotions)

    def pca(self, layer: int, components: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
        """Principal components of the emotion vectors at ``layer``: scores per emotion and the
        fraction of variance each component explains."""
        scores, explained = pca_scores(self.at(layer).double().numpy(), components)
        columns = [f"pc{i + 1}" for i in range(components)]
        return pd.DataFrame(scores, index=self.emotions, columns=columns), explained

    # --- compatibility -----------------------------------------------------------------
    def check_model(self, model: Model) -> None:
        """Refuse vectors built for another model (wrong width, depth or weights)."""
        meta = self.metadata
        mismatch = (self.width, self.n_layers) != (model.width, model.n_layers) or (
            meta.get("model_sha256") and model.sha256 and meta["model_sha256"] != model.sha256
        )
        if mismatch:
            raise ExplorerError(
                f"these vectors were built for '{meta.get('model')}' (width {self.width}, "
                f"{self.n_layers} layers) but the model is '{model.name}' (width {model.width}, "
                f"{model.n_layers} layers); build its own with `explorer vectors build --model {model.name}`"
            )

    # --- files -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one safetensors file whose header carries the JSON metadata (never pickle)."""
        path = Path(path)
        tensors = {
            "directions": self.directions.contiguous(),
            "neutral_mean": self.neutral_mean.contiguous(),
            "neutral_std": self.neutral_std.contiguous(),
            "residual_norm": self.residual_norm.contiguous(),
            "grand_mean": self.grand_mean.contiguous(),
        }
        if self.null_directions is not None:
            tensors["null_directions"] = self.null_directions.contiguous()
        meta = {**self.metadata, "format": FORMAT, "emotions": self.emotions}
        cache.write_file_atomic(path, save_bytes(tensors, metadata={"explorer": json.dumps(meta)}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmotionVectors:
        path = Path(path)
        if not path.is_file():
            raise ExplorerError(f"{path}: no such vector file; build one with `explorer vectors build`")
        try:
            with safe_open(str(path), "pt") as handle:
                header = handle.metadata() or {}
            tensors = load_file(str(path))
            meta = json.loads(header["explorer"])
        except (SafetensorError, KeyError, ValueError, OSError) as exc:
            raise ExplorerError(
                f"{path}: not an emotion-vector file ({type(exc).__name__}); rebuild it with `explorer vectors build`"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ExplorerError(f"{path}: field 'format' is {found!r}, expected {FORMAT!r}")
        missing = [
            k for k in ("directions", "neutral_mean", "neutral_std", "residual_norm", "grand_mean") if k not in tensors
        ]
        if missing or not isinstance(meta.get("emotions"), list):
            field = f"tensor '{missing[0]}'" if missing else "metadata field 'emotions' (a list of names)"
            raise ExplorerError(f"{path}: {field} is missing; rebuild it with `explorer vectors build`")
        try:
            return cls(
                directions=tensors["directions"],
                emotions=meta["emotions"],
                neutral_mean=tensors["neutral_mean"],
                neutral_std=tensors["neutral_std"],
                residual_norm=tensors["residual_norm"],
                grand_mean=tensors["grand_mean"],
                metadata=meta,
                null_directions=tensors.get("null_directions"),
            )
        except ExplorerError as error:
            raise ExplorerError(f"{path}: {error}") from None


def pca_scores(matrix: np.ndarray, components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the rows of ``matrix`` on its top principal components (sign fixed so each
    component's largest loading is positive, making results reproducible) and variance fractions."""
    centred = matrix - matrix.mean(0, keepdims=True)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    scores = (u * s) * signs
    explained = s**2 / (s**2).sum()
    return scores[:, :components], explained[:components]


# --- the recipe ------------------------------------------------------------------------
def denoising_basis(covariance: torch.Tensor, fraction: float) -> torch.Tensor:
    """Top principal directions (width, k) that together explain ``fraction`` of the variance."""
    if fraction <= 0:
        return covariance.new_zeros(covariance.shape[0], 0)
    values, vectors = torch.linalg.eigh(covariance)
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    cumulative = values.cumsum(0) / values.sum()
    k = int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=cumulative.dtype)).item()) + 1
    return vectors[:, :k]


def emotion_directions(
    story_means: torch.Tensor, labels: Sequence[str], emotions: Sequence[str], bases: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-4 of the recipe. Returns unit directions (layers, emotions, width) and the grand
    mean (layers, width) that was subtracted."""
    labels = np.asarray(labels)
    per_emotion = torch.stack([story_means[torch.from_numpy(labels == e)].mean(0) for e in emotions], 1)
    grand = per_emotion.mean(1)  # mean over emotions, so an emotion with more stories weighs no more
    raw = per_emotion - grand[:, None, :]
    for layer, basis in enumerate(bases):
        raw[layer] -= (raw[layer] @ basis) @ basis.T
    return raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-12), grand


def lda_directions(
    story_means: torch.Tensor, labels: Sequence[str], emotions: Sequence[str], shrinkage: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """The "shrinkage_lda" alternative to steps 2-4: each emotion's contrast (its mean minus the
    grand mean over emotions) whitened by the within-emotion covariance of the texts, shrunk towards
    a multiple of the identity (``shrinkage`` × its mean variance), then normalised:
    (S_w + λI)⁻¹ (μ_e − ḡ). Directions along which texts of one emotion vary a lot (topic, register,
    length) are down-weighted. Takes and returns the same shapes as :func:`emotion_directions`."""
    labels = np.asarray(labels)
    index = torch.as_tensor([list(emotions).index(x) for x in labels])
    units, grands = [], []
    for layer in range(story_means.shape[1]):
        x = story_means[:, layer]
        class_means = torch.stack([x[torch.from_numpy(labels == e)].mean(0) for e in emotions])
        grand = class_means.mean(0)
        centred = x - class_means[index]
        within = centred.T @ centred / len(x)
        ridge = shrinkage * within.diagonal().mean()
        eye = torch.eye(len(within), dtype=within.dtype)
        solved = torch.linalg.solve(within + ridge * eye, (class_means - grand).T).T
        units.append(solved / solved.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        grands.append(grand)
    return torch.stack(units), torch.stack(grands)


def recipe_directions(
    story_means: torch.Tensor, labels: Sequence[str], emotions: Sequence[str], bases: Sequence[torch.Tensor],
    recipe: Recipe,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Unit directions (layers, emotions, width) and grand mean (layers, width) by ``recipe.directions``."""
    if recipe.directions == "shrinkage_lda":
        return lda_directions(story_means, labels, emotions, recipe.shrinkage)
    return emotion_directions(story_means, labels, emotions, bases)


def _model_key(model: Model) -> str:
    return f"{model.name.replace('/', '--')}-{(model.sha256 or 'local')[:16]}"


def _extraction_cache_path(model: Model, corpus: Corpus, recipe: Recipe) -> Path:
    return (
        cache.cache_root()
        / "extraction"
        / f"{_model_key(model)}-{corpus.fingerprint()[:16]}-o{recipe.offset}.safetensors"
    )


def extract(model: Model, corpus: Corpus, recipe: Recipe, progress: bool = True) -> Extraction:
    """Run every story and neutral dialogue through ``model`` (cached per model, corpus, offset)."""
    path = _extraction_cache_path(model, corpus, recipe)
    labels = [s.emotion for s in corpus.stories]
    topics = [s.topic for s in corpus.stories]
    key = f"{_model_key(model)}|{corpus.fingerprint()}|offset={recipe.offset}"
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as handle:
                stored = (handle.metadata() or {}).get("key")
            t = load_file(str(path))
            expected = (len(corpus.stories), model.n_layers, model.width)
            if (stored is not None and stored != key) or tuple(t["story_means"].shape) != expected:
                log.warning("extraction cache %s belongs to other inputs; recomputing it", path)
            else:
                return Extraction(
                    t["story_means"],
                    labels,
                    topics,
                    t["neutral_mean"],
                    t["neutral_covariance"],
                    t["neutral_norm"],
                    int(t["neutral_tokens"].item()),
                )
        except (SafetensorError, KeyError, OSError):
            log.warning("extraction cache %s is damaged; recomputing it", path)
    means = text_means(model, [s.text for s in corpus.stories], recipe.offset, progress=progress)
    moments: Moments = token_moments(model, list(corpus.neutral), recipe.offset, progress=progress)
    mean, norm = moments.mean, moments.mean_norm
    result = Extraction(means, labels, topics, mean, moments.take_covariance(), norm, moments.count)
    tensors = {
        "story_means": result.story_means.contiguous(),
        "neutral_mean": result.neutral_mean.contiguous(),
        "neutral_covariance": result.neutral_covariance.contiguous(),
        "neutral_norm": result.neutral_norm.contiguous(),
        "neutral_tokens": torch.tensor([result.neutral_tokens]),
    }
    # written straight to disk (not built as bytes first: the covariance alone is 80 MB for SmolLM2),
    # with the inputs it belongs to
    cache.write_file_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={"key": key}))
    return result


def vectors_from_extraction(extraction: Extraction, recipe: Recipe, metadata: dict) -> EmotionVectors:
    """The recipe on already-extracted activations.

    Also builds the relabelled-stories null: the same recipe on the same stories with their
    emotion labels shuffled (seed 0), one "emotion" per real one. Those directions carry whatever
    the recipe produces from story content alone, the stricter baseline for every comparison.
    """
    labels = np.asarray(extraction.labels)
    means = extraction.story_means
    emotions = list(dict.fromkeys(labels.tolist()))
    bases = [denoising_basis(c, recipe.denoise_variance) for c in extraction.neutral_covariance]
    directions, grand = recipe_directions(means, labels, emotions, bases, recipe)
    null, _ = recipe_directions(means, shuffled_labels(labels.tolist(), seed=0), emotions, bases, recipe)
    neutral_mean = torch.einsum("lew,lw->le", directions, extraction.neutral_mean)
    neutral_var = torch.einsum("lew,lwv,lev->le", directions, extraction.neutral_covariance, directions)
    counts = {e: int((labels == e).sum()) for e in emotions}
    meta = {
        **metadata,
        "recipe": asdict(recipe),
        "denoise_components": [int(b.shape[1]) for b in bases],
        "stories_per_emotion": counts,
        "neutral_tokens": extraction.neutral_tokens,
    }
    return EmotionVectors(
        directions=directions,
        emotions=emotions,
        neutral_mean=neutral_mean,
        neutral_std=neutral_var.clamp_min(1e-12).sqrt(),
        residual_norm=extraction.neutral_norm,
        grand_mean=grand,
        metadata=meta,
        null_directions=null,
    )


def build_vectors(
    model: Model,
    stories: Sequence[Story] = (),
    recipe: Recipe | None = None,
    progress: bool = True,
    topics: int | None = None,
    corpus: Corpus | None = None,
) -> EmotionVectors:
    """Build emotion vectors for ``model`` from the shipped corpus plus your own ``stories``.

    Args:
        model: from :func:`explorer.load_model`.
        stories: extra :class:`Story` objects (new emotions, or more stories for shipped ones);
            see :func:`explorer.corpus.read_stories` for the JSONL file format.
        recipe: offset and denoising; the defaults are the ones the shipped vectors use.
        progress: show progress bars (texts go through the model in batches).
        topics: use only the corpus's first ``topics`` topics: a proportionally cheaper build for
            big models on a CPU, recorded in the vectors' metadata.
        corpus: the corpus to build from (default: the shipped corpus v2; ``load_corpus("v1")``
            rebuilds the files made from the first corpus).
    """
    recipe = recipe or Recipe()
    corpus = corpus or load_corpus()
    corpus = corpus if topics is None else corpus.first_topics(topics)
    for line in story_warnings(corpus, stories, MIN_STORIES):
        log.warning(line)
    extraction = extract(model, corpus, recipe, progress=progress)
    if stories:
        extra = text_means(model, [s.text for s in stories], recipe.offset, desc="your stories", progress=progress)
        extraction = Extraction(
            torch.cat([extraction.story_means, extra]),
            extraction.labels + [s.emotion for s in stories],
            extraction.topics + [s.topic for s in stories],
            extraction.neutral_mean,
            extraction.neutral_covariance,
            extraction.neutral_norm,
            extraction.neutral_tokens,
        )
        corpus = corpus.with_stories(list(stories))
    metadata = {
        "model": model.name,
        "model_sha256": model.sha256,
        "n_layers": model.n_layers,
        "width": model.width,
        "corpus_sha256": corpus.fingerprint(),
        "corpus_topics": len({s.topic for s in corpus.stories}),
        "created_by": f"emotion-vector-explorer {__version__}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return vectors_from_extraction(extraction, recipe, metadata)


def shipped_path(model_name: str) -> Path:
    return SHIPPED_DIR / f"{model_name.replace('/', '--')}.safetensors"


def load_vectors(model: Model, path: str | Path | None = None, progress: bool = True) -> EmotionVectors:
    """The emotion vectors for ``model``: from ``path``, else the file shipped for it, else the
    user cache, else built now (a few minutes, with a progress bar) and cached."""
    if not isinstance(model, Model):
        named = repr(model) if isinstance(model, str | Path) else "NAME"
        raise ExplorerError(
            f"load_vectors: model is a {type(model).__name__}; pass the loaded model, "
            f"ex.load_vectors(ex.load_model({named})): the vectors are checked against it"
        )
    if path is not None:
        vectors = EmotionVectors.load(path)
    elif shipped_path(model.name).is_file():
        vectors = EmotionVectors.load(shipped_path(model.name))
    else:
        cached = cache.cache_root() / "vectors" / f"{_model_key(model)}-{load_corpus().fingerprint()[:16]}.safetensors"
        try:
            vectors = EmotionVectors.load(cached)
        except ExplorerError:
            log.warning("building emotion vectors for %s (once; cached at %s)", model.name, cached)
            vectors = build_vectors(model, progress=progress)
            vectors.save(cached)
    vectors.check_model(model)
    return vectors


def random_unit_directions(n: int, width: int, seed: int = 0) -> torch.Tensor:
    """``n`` random unit vectors (the random-direction baseline), reproducible by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    d = torch.randn(n, width, generator=generator, dtype=torch.float64)
    return d / d.norm(dim=-1, keepdim=True)


def shuffled_labels(labels: Sequence[str], seed: int) -> list[str]:
    """Story labels permuted at random: the "emotions" of the relabelled-stories null."""
    shuffled = list(labels)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def score_texts(
    model: Model,
    vectors: EmotionVectors,
    texts: Sequence[str],
    layer: int | None = None,
    progress: bool = True,
    centre: str = "vectors",
) -> pd.DataFrame:
    """Each text's mean read-out per emotion (z, as traces calibrate it) over its tokens from the
    extraction offset, at ``layer`` (default: the model's read-out layer) — the same reduction the
    vectors were built with, so users can test them on their own labelled texts. Texts go through
    the model in batches; a text longer than the model's context is refused with its index.

    ``centre="texts"`` subtracts, per emotion, the mean read-out over the given texts (centring on
    their own mean activation, since a read-out is linear): each text is then scored against the
    others, which removes what all of them share — the register, say, of a set of chat messages
    unlike the corpus. On texts of a register the vectors never saw it picks the right one of 40
    emotions more often (docs/VECTORS.md); it needs several texts, of more than one emotion.
    """
    if centre not in ("vectors", "texts"):
        raise ExplorerError(f"score: centre {centre!r}; use 'vectors' (the vectors' calibration) or 'texts'")
    from .activations import text_means, tokenize, window_start

    vectors.check_model(model)
    (layer,) = model.resolve_layers(layer)
    texts = list(texts)
    offset = Recipe.from_metadata(vectors.metadata).offset
    short = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ExplorerError(f"text {i}: empty; every text needs at least one word")
        n = tokenize(model, text).shape[1]
        if n > model.context_limit:
            raise ExplorerError(
                f"text {i}: {n} tokens, more than the {model.context_limit} '{model.name}' reads; shorten or split it"
            )
        if n - window_start(n, offset) < MIN_READ_TOKENS:
            short.append((i, n))
    if short:
        i, n = short[0]
        log.warning(
            "%d text(s) so short that their read-out averages fewer than %d tokens (e.g. text %d: %d token(s)); "
            "such read-outs are noise (a one-token text is read at the attention sink): give a sentence or more",
            len(short), MIN_READ_TOKENS, i, n,
        )  # fmt: skip
    if centre == "texts" and len(texts) < 2:
        raise ExplorerError("score: centre='texts' scores texts against each other; give at least two texts")
    means = text_means(model, texts, offset, desc="texts", progress=progress, layers=[layer])[:, 0]
    z = vectors.readout(means, layer)
    if centre == "texts":
        z = z - z.mean(0, keepdim=True)
    return pd.DataFrame(z.numpy(), columns=vectors.emotions)
