"""Atomic writes: files and folders appear whole under their final name or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class TargetExistsError(FileExistsError):
    """Raised instead of silently overwriting an existing file or folder."""


def write_json(path: str | Path, obj: Any, *, overwrite: bool = True, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise TargetExistsError(f"{path} exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=indent)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False, mode: int = 0o755) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename.

    On an exception the temporary folder is removed and ``path`` is left exactly as it was. With
    ``overwrite=False`` an existing ``path`` raises :class:`TargetExistsError` before anything is written.
    The finished folder gets permissions ``mode`` (``0o700`` for private data).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise TargetExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(mode)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporary folders/files that an interrupted :func:`atomic_dir`/:func:`write_json` left."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and (p.name.endswith(".tmp") or ".old-" in p.name)]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file and position on a parse error."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def safe_name(name: str, max_len: int = 64) -> str:
    """A file/repo-safe form of an id: ``[A-Za-z0-9._-]`` kept, a short hash added when anything changed."""
    import hashlib
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "x"
    if slug == name and len(slug) <= max_len:
        return slug
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{slug[: max_len - 9]}-{digest}"
