"""The user cache: where de-quantized models, vectors and traces are kept between sessions.

Everything is written atomically: a directory or file is built under a temporary name beside its
final place and renamed into place only when complete, so an interrupted write never leaves
something that looks finished. Directories carry a manifest of their files' sha256 digests so a
damaged entry is detected and rebuilt instead of loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import ExplorerError

log = logging.getLogger(__name__)

CACHE_ENV = "EXPLORER_CACHE"
MANIFEST = "explorer-manifest.json"
STALE_AFTER_S = 3600.0  # a temporary entry untouched for an hour belongs to a write that was killed
CACHE_FOLDERS = ("models", "traces", "vectors", "extraction")
_checked: set[Path] = set()


def cache_root() -> Path:
    """The cache directory: ``$EXPLORER_CACHE``, else ``$XDG_CACHE_HOME/emotion-vector-explorer``,
    else ``~/.cache/emotion-vector-explorer``.

    The first use in a process checks that it is a folder this process can write in (else a
    one-line error naming the variable and the fix) and removes temporary entries that killed
    writes left behind (:func:`clean_stale_temporaries`)."""
    if os.environ.get(CACHE_ENV):
        root, named = Path(os.environ[CACHE_ENV]).expanduser(), f"${CACHE_ENV}={os.environ[CACHE_ENV]}"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "emotion-vector-explorer"
        named = f"the cache folder {root}"
    if root in _checked and root.is_dir():
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ExplorerError(
            f"{named}: cannot be used as the cache ({reason}); point ${CACHE_ENV} at a folder you can write in"
        ) from None
    for folder in CACHE_FOLDERS:
        clean_stale_temporaries(root / folder)
    _checked.add(root)
    return root


def clean_stale_temporaries(folder: Path, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove what interrupted writes left in ``folder``: the ``.NAME.*.tmp`` files and folders
    made by :func:`temporary_dir_beside` and :func:`write_file_atomic` in which nothing has
    changed for ``max_age_s`` (a write still running elsewhere keeps touching its entry).
    Returns what was removed."""
    removed = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in folder.iterdir():
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")) or entry.is_symlink():
            continue
        try:
            if now - _newest_mtime(entry) < max_age_s:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # gone meanwhile, or not ours to remove: leave it
        log.info("removed %s, left by an interrupted write", entry)
        removed.append(entry)
    return removed


def _newest_mtime(entry: Path) -> float:
    newest = entry.lstat().st_mtime
    if entry.is_dir():
        for path in entry.rglob("*"):
            newest = max(newest, path.lstat().st_mtime)
    return newest


def sha256_of(paths: Iterable[Path], block: int = 1 << 22) -> str:
    """sha256 of the concatenation of ``paths`` (one file, or the parts of a split file)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(block):
                digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, extra: dict | None = None) -> None:
    """Record every file's digest in ``directory``; written last, so its presence means done."""
    files = {p.name: sha256_of([p]) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps({"files": files, **(extra or {})}, indent=1))


def verify_manifest(directory: Path) -> str | None:
    """None when ``directory`` holds exactly what its manifest lists, else the reason it does not."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return "no manifest (an earlier write did not finish)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return "unreadable manifest"
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            return f"missing {name}"
        if sha256_of([path]) != digest:
            return f"{name} does not match its recorded sha256"
    return None


def temporary_dir_beside(final: Path) -> Path:
    """A fresh directory on the same file system as ``final`` (so the final rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a completed ``tmp`` directory to ``final``, replacing a damaged earlier one."""
    if final.exists():
        trash = temporary_dir_beside(final)
        os.replace(final, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, final)


def write_file_atomic(path: Path, data: bytes | Callable[[str], None]) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename. ``data`` is the bytes, or a
    function that writes the file at the path it is given (so a large file need not first be
    built in memory, e.g. ``lambda tmp: safetensors.torch.save_file(tensors, tmp)``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; these are ordinary outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
