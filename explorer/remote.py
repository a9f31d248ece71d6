"""Remote models on NDIF (the National Deep Inference Fabric) through nnsight's remote backend.

    model = ex.load_model("meta-llama/Llama-3.1-8B-Instruct", remote=True)

Before anything runs, NDIF's status is read and the model must be one it is running now; an
unreachable service or an unhosted model is a one-line error saying how to run locally instead.
The API key comes from the ``NDIF_API_KEY`` environment variable or, interactively, a hidden
prompt. It is held in nnsight's in-memory configuration only: never printed, logged, written to
a file or cache, or stored in a notebook (a prompt's answer is not a cell output).

Every pass sends back only reduced values: read-outs (tokens × emotions), per-text means, or a
few logits; the same code runs locally when ``remote`` is off, which is how it is tested here.
"""

from __future__ import annotations

import getpass
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import ExplorerError

log = logging.getLogger(__name__)

EXAMPLE = "meta-llama/Llama-3.1-8B-Instruct"
STATUS_TIMEOUT_S = 8.0
# Texts per remote request when building vectors: bounded so one response stays in the tens of MB.
REMOTE_BATCH_TEXTS = 8


def host() -> str:
    from nnsight import CONFIG

    return CONFIG.API.HOST


def _local_hint() -> str:
    return "run locally instead: leave out remote=True / --remote, or ex.load_model() for the default model"


def running_models(timeout: float = STATUS_TIMEOUT_S) -> set[str]:
    """Repo ids NDIF is running now; an unreachable service is a one-line ExplorerError."""
    import httpx

    try:
        response = httpx.get(f"{host()}/status", timeout=timeout)
        response.raise_for_status()
        deployments = response.json().get("deployments", {})
    except Exception as exc:  # DNS, refused, timeout, HTTP error, bad JSON: all mean "not usable"
        reason = type(exc).__name__
        raise ExplorerError(f"NDIF at {host()} is unreachable from this machine ({reason}); {_local_hint()}") from None
    return {
        value.get("repo_id", name)
        for name, value in deployments.items()
        if isinstance(value, dict) and value.get("application_state") == "RUNNING"
    }


def check_hosted(repo_id: str, timeout: float = STATUS_TIMEOUT_S) -> None:
    running = running_models(timeout)
    if repo_id not in running:
        listed = ", ".join(sorted(running)[:8]) or "none right now"
        raise ExplorerError(f"'{repo_id}' is not running on NDIF (running: {listed}); {_local_hint()}")


def use_api_key(prompt: bool = True) -> None:
    """Put the key into nnsight's in-memory configuration; never echo, log or save it."""
    from nnsight import CONFIG

    key = os.environ.get("NDIF_API_KEY", "").strip()
    if not key and prompt and _can_prompt():
        try:
            key = getpass.getpass("NDIF API key (input hidden; not saved): ").strip()
        except Exception:  # a front end that cannot ask (nbval, Voila without stdin): no key
            key = ""
    if not key:
        raise ExplorerError(
            "no NDIF API key: set the NDIF_API_KEY environment variable before starting Python "
            "(never in a notebook cell), or run interactively to be asked for it; keys: https://login.ndif.us"
        )
    CONFIG.API.APIKEY = key  # memory only: CONFIG.save()/set_default_api_key would write it to disk


def _can_prompt() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if type(shell).__name__ == "ZMQInteractiveShell":  # a notebook: the front end asks, hidden
        return True
    return sys.stdin is not None and sys.stdin.isatty()


def _service_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean the remote service or the way to it failed (not our code)."""
    kinds: list[type[BaseException]] = [OSError]  # refused, reset, DNS, timeouts
    for module, name in (
        ("nnsight.intervention.backends.remote", "RemoteError"),  # a job that failed on NDIF, an HTTP 503
        ("websocket", "WebSocketException"),  # the status stream: bad handshake, closed mid-job
        ("httpx", "HTTPError"),  # uploads and result downloads
    ):
        try:
            kinds.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(kinds)


@contextmanager
def pass_failures(model: Any) -> Iterator[None]:
    """Around a forward pass: when ``model`` runs on NDIF, a failure of the service or of the
    connection to it (an HTTP 503, a dropped websocket, a job that failed there) becomes one
    ExplorerError saying the remote service failed and to retry. Local passes are untouched."""
    if not getattr(model, "remote", False):
        yield
        return
    try:
        yield
    except ExplorerError:
        raise
    except _service_errors() as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise ExplorerError(
            f"the remote service NDIF ({host()}) failed during a pass of '{model.name}' ({reason}); "
            f"nothing was saved: retry in a minute, or {_local_hint()}"
        ) from None


def open_remote(repo_id: str) -> tuple[Any, str]:
    """nnsight's handle on ``repo_id`` (config and tokenizer local, weights on NDIF) and a
    description of where it runs; :func:`explorer.load_model` with ``remote=True`` wraps it."""
    import warnings

    if "/" not in repo_id:
        raise ExplorerError(f"remote models are Hugging Face ids (owner/name, e.g. {EXAMPLE}), not '{repo_id}'")
    check_hosted(repo_id)
    use_api_key()
    from nnsight import TransformersModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handle = TransformersModel(repo_id)  # config and tokenizer only; the weights stay on NDIF
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExplorerError(
            f"cannot read the config and tokenizer of '{repo_id}' from the Hugging Face hub: {first}"
        ) from None
    log.info("remote model %s ready (config and tokenizer local, weights on NDIF)", repo_id)
    return handle, f"NDIF ({host()})"
