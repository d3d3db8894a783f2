"""Atomic writes: files and folders appear whole under their final name or not at all, survive a crash at any
point (flushed to disk before they are renamed into place), and can be made owner-only; locks between processes
that write in one folder; file names for ids."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
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


def make_private_dirs(path: str | Path) -> Path:
    """Create ``path`` and whichever of its parents are missing, each owner-only (0700); folders that exist are
    left as they are (a shared parent such as ``/tmp`` is never touched)."""
    path = Path(path)
    for p in reversed([p for p in (path, *path.parents) if not p.exists()]):
        p.mkdir(mode=0o700, exist_ok=True)
        p.chmod(0o700)
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
    recovered and the temporaries deleted. Call it only while nothing else writes in ``folder`` (a run that shares
    the folder with others: ``clean()`` of :func:`folder_in_use`)."""
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


def keeps_name(name: str, slug: str, *, sep: str = "-", max_len: int = 64) -> bool:
    """Whether ``slug``, a sanitised form of ``name``, may stand for ``name`` unhashed: it is ``name`` itself, fits
    ``max_len`` and does not end like a hashed name (``sep`` and 8 hex digits), which could be another id's."""
    return slug == name and len(slug) <= max_len and not re.search(rf"{re.escape(sep)}[0-9a-f]{{8}}$", slug)


def name_digest(name: str) -> str:
    """The 8 hex digits that tell apart the hashed names of ids."""
    return hashlib.sha1(name.encode()).hexdigest()[:8]


def safe_name(name: str, max_len: int = 64) -> str:
    """A file/repo-safe form of an id: ``[A-Za-z0-9._-]`` kept, a short hash of the exact id added when anything
    changed or the id itself ends like a hashed name (:func:`keeps_name`), so distinct ids get distinct names."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "x"
    if keeps_name(name, slug, max_len=max_len):
        return slug
    return f"{slug[: max_len - 9]}-{name_digest(name)}"


# ---------------------------------------------------------------------------------------------- locks


class FileLock:
    """An exclusive lock between processes: an ``fcntl.flock`` on the lock file ``path``, which is created when
    taken and removed when released. The kernel releases it when its process dies (the file may stay; the next
    taker reuses it). Take it with :meth:`acquire` (waits) or :meth:`try_acquire`; ``with`` releases it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: str | Path) -> FileLock:
        """Wait for the lock on ``path`` and take it."""
        return cls._take(Path(path), fcntl.LOCK_EX)

    @classmethod
    def guarding(cls, path: str | Path) -> FileLock:
        """Wait for and take the lock that guards read-modify-writes of the file ``path`` (``.{name}.lock``
        beside it)."""
        path = Path(path)
        return cls.acquire(path.with_name(f".{path.name}.lock"))

    @classmethod
    def try_acquire(cls, path: str | Path) -> FileLock | None:
        """The lock on ``path``, or ``None`` at once when another process (or another lock here) holds it."""
        try:
            return cls._take(Path(path), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None

    @classmethod
    def _take(cls, path: Path, flags: int) -> FileLock:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, flags)
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, path):
                return cls(path, fd)
            os.close(fd)  # its holder removed the file on release while we waited: lock the current one

    def release(self) -> None:
        """Remove the lock file and release the lock (removed first, so no one locks a file that is gone)."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)


@contextlib.contextmanager
def folder_in_use(folder: str | Path) -> Iterator[Callable[[], list[Path]]]:
    """Mark ``folder`` as written by this process for the block (a shared ``fcntl.flock`` on the folder itself,
    held by every run that writes there). Yields ``clean()``: :func:`remove_stale_temps` of ``folder`` when no
    other process holds it -- another run's temporaries are work in progress -- else nothing; returns what it
    cleaned up."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)

    def clean() -> list[Path]:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)  # a failed upgrade may drop the shared lock: take it again
            return []
        try:
            return remove_stale_temps(folder)
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)

    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield clean
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
