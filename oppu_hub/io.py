"""Atomic writes: files and folders appear whole under their final name or not at all, survive a crash at any
point (flushed to disk before they are renamed into place), and can be made owner-only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_OLD = re.compile(r"^\.(?P<name>.+)\.old-\d+$")


class TargetExistsError(FileExistsError):
    """Raised instead of silently overwriting an existing file or folder."""


def _fsync(path: str | Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """Flush every file and folder under ``folder`` (and ``folder`` itself) to disk."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                _fsync(path)
        _fsync(root, directory=True)


def owner_only(path: str | Path) -> Path:
    """Remove every group/other permission from ``path`` and everything under it: folders 0700, files 0600
    (read-only files 0400)."""
    path = Path(path)
    for p in (path, *path.rglob("*")) if path.is_dir() else (path,):
        if p.is_symlink():
            continue
        p.chmod(0o700 if p.is_dir() else stat.S_IMODE(p.stat().st_mode) & 0o700)
    return path


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (missing parents with default permissions) and make it owner-only (0700)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_json(path: str | Path, obj: Any, *, overwrite: bool = True, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` (owner-only, 0600) through a flushed temporary file and a rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise TargetExistsError(f"{path} exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=indent)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync(path.parent, directory=True)
    return path


def stale_targets(folder: str | Path) -> list[Path]:
    """The folders in ``folder`` whose replacement by :func:`atomic_dir` a crash interrupted (a set-aside
    ``.{name}.old-PID`` copy is left beside them, or instead of them)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted({folder / m["name"] for p in folder.iterdir() if (m := _OLD.match(p.name))})


def recover_dir(path: str | Path) -> Path | None:
    """Finish a replacement of ``path`` by :func:`atomic_dir` that a crash interrupted: when ``path`` is missing its
    previous version (``.{name}.old-PID``, set aside just before the new one was renamed in) is put back; when
    ``path`` exists, the new version made it and the old copy is deleted. Returns the restored folder, if any."""
    path = Path(path)
    if not path.parent.is_dir():
        return None
    restored = None
    for old in sorted(p for p in path.parent.iterdir() if (m := _OLD.match(p.name)) and m["name"] == path.name):
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, path)
            _fsync(path.parent, directory=True)
            restored = path
    return restored


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False, mode: int = 0o755) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    On an exception the temporary folder is removed and ``path`` is left exactly as it was. With
    ``overwrite=False`` an existing ``path`` raises :class:`TargetExistsError` before anything is written. The
    finished folder gets permissions ``mode``; an owner-only ``mode`` (``0o700``) makes everything in it owner-only.
    Everything is flushed to disk before the rename. Replacing takes two renames (the old folder aside, the new one
    in); a crash between them is undone by the next :func:`recover_dir` / :func:`remove_stale_temps` / ``atomic_dir``
    on ``path``, and the old copy is deleted only once the new one is in place.
    """
    path = Path(path)
    recover_dir(path)
    if path.exists() and not overwrite:
        raise TargetExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if not mode & 0o077:
            owner_only(tmp)
        tmp.chmod(mode)
        fsync_tree(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            _fsync(path.parent, directory=True)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            _fsync(path.parent, directory=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Clean up after interrupted :func:`atomic_dir`/:func:`write_json` calls in ``folder``: set-aside old versions
    are put back or deleted (:func:`recover_dir`), temporary files and folders are deleted. Returns the folders
    recovered and the temporaries deleted. Call it only while nothing else writes in ``folder``."""
    folder = Path(folder)
    handled = stale_targets(folder)
    for target in handled:
        recover_dir(target)
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            handled.append(p)
    return handled


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file and position on a parse error (and a file that is not UTF-8)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def safe_name(name: str, max_len: int = 64) -> str:
    """A file/repo-safe form of an id: ``[A-Za-z0-9._-]`` kept, a short hash added when anything changed."""
    import hashlib

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "x"
    if slug == name and len(slug) <= max_len:
        return slug
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{slug[: max_len - 9]}-{digest}"
