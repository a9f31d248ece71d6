"""The user cache: where de-quantized models, vectors and traces are kept between sessions.

Everything is written atomically: a directory or file is built under a temporary name beside its
final place and renamed into place only when complete, so an interrupted write never leaves
something that looks finished. Directories carry a manifest of their files' sha256 digests so a
damaged entry is detected and rebuilt instead of loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

CACHE_ENV = "EXPLORER_CACHE"
MANIFEST = "explorer-manifest.json"


def cache_root() -> Path:
    """The cache directory: ``$EXPLORER_CACHE``, else ``$XDG_CACHE_HOME/emotion-vector-explorer``,
    else ``~/.cache/emotion-vector-explorer``."""
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "emotion-vector-explorer"
    root.mkdir(parents=True, exist_ok=True)
    return root


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


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; these are ordinary outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
