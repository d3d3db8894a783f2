"""Adapters in a local folder laid out like the Hub (the embedded default store): ``{root}/{namespace}/{repo}/``
with the same files and card as a Hub repo; each push is atomic and a new revision, older ones stay readable."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import metadata_load

from .adapters import verify_adapter
from .io import atomic_dir, owner_only, private_dir, recover_dir, stale_targets
from .store_base import (
    README,
    REPO_PART,
    AdapterRef,
    AdapterRepoNotFoundError,
    AdapterStore,
    PushResult,
    StoreAuthError,
    StoreNamespaceError,
    check_served,
    ref_from_tags,
)

logger = logging.getLogger(__name__)

NAMESPACE_ENV = "OPPU_HUB_NAMESPACE"
DEFAULT_LOCAL_NAMESPACE = "local"
HISTORY_DIR = ".history"
LOG_FILE = "log.jsonl"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class LocalStore(AdapterStore):
    """Adapters in a local folder laid out like the Hub: ``{root}/{namespace}/{repo}/`` holds the latest files
    (PEFT files, ``oppu.json``, ``README.md``), and ``{repo}/.history/{n}/`` every revision ``n`` with
    ``.history/log.jsonl`` (one line per revision: ``n``, ``sha``, ``parent``, message, date, file hashes).
    Private repos are owner-only (folders 0700, files 0600/0400), and so are the root and namespace folders of a
    private store (the repo names carry user ids). A push replaces the repo folder in one rename (older revisions
    are hard-linked across, not copied), under a lock, so readers never see half a push.

    Args:
        root: the store folder.
        namespace: the namespace pushed to and listed (default ``$OPPU_HUB_NAMESPACE`` or ``local``).
    """

    kind = "local"

    def __init__(self, root: str | Path, namespace: str | None = None, *, hash_user_ids: bool | None = None,
                 salt: str | None = None, private: bool = True):
        super().__init__(namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_LOCAL_NAMESPACE,
                         hash_user_ids=hash_user_ids, salt=salt, private=private)
        self.root = Path(root).expanduser()

    def describe(self) -> str:
        return f"{self.root} namespace {self.namespace}"

    def repo_dir(self, repo_id: str) -> Path:
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(REPO_PART.match(p) and ".." not in p for p in parts):
            raise ValueError(f"invalid repo id {repo_id!r}: expected NAMESPACE/NAME")
        return self.root / parts[0] / parts[1]

    @staticmethod
    def _log(repo: Path) -> list[dict[str, Any]]:
        path = repo / HISTORY_DIR / LOG_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    @contextlib.contextmanager
    def _lock(self, repo: Path) -> Iterator[None]:
        """Hold the repo's lock; a crash-interrupted replacement of the repo is finished first."""
        for folder in (self.root, repo.parent):
            if self.private:
                private_dir(folder)
            else:
                folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(repo.parent / f".{repo.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            recover_dir(repo)
            yield
        finally:
            os.close(fd)  # releases the lock

    def push(self, folder: str | Path, *, base_model: str | None = None, commit_message: str | None = None,
             private: bool | None = None, make_private: bool = False) -> PushResult:
        record = verify_adapter(folder)
        repo_id = self.repo_id(record.user_id, record.task)
        repo = self.repo_dir(repo_id)
        contents = {name: c if isinstance(c, bytes) else c.read_bytes()
                    for name, c in self.repo_files(folder, record, repo_id, base_model).items()}
        hashes = {name: _sha256(c) for name, c in sorted(contents.items())}
        with self._lock(repo):
            if repo.exists() and not os.access(repo, os.R_OK | os.W_OK | os.X_OK):
                raise StoreNamespaceError(f"{repo} exists and belongs to someone else (no permission)")
            public = bool(repo.stat().st_mode & 0o077) if repo.exists() else None
            is_private = self._keeps_private(repo_id, public, private, make_private)
            log = self._log(repo)
            if log and log[-1]["files"] == hashes:
                if is_private and public:
                    owner_only(repo)
                return PushResult(repo_id, log[-1]["sha"], str(repo), new_revision=False)
            n = len(log) + 1
            parent = log[-1]["sha"] if log else None
            entry = {"n": n, "sha": "", "parent": parent, "message": commit_message or self.commit_message(record),
                     "date": _now(), "files": hashes}
            entry["sha"] = hashlib.sha1(json.dumps(entry, sort_keys=True).encode()).hexdigest()
            with atomic_dir(repo, overwrite=True, mode=0o700 if is_private else 0o755) as tmp:
                history = tmp / HISTORY_DIR
                if (repo / HISTORY_DIR).is_dir():
                    shutil.copytree(repo / HISTORY_DIR, history, copy_function=_link_or_copy,
                                    ignore=shutil.ignore_patterns(LOG_FILE))
                rev = history / str(n)
                rev.mkdir(parents=True)
                for name, content in contents.items():
                    (rev / name).write_bytes(content)
                    (rev / name).chmod(0o444)
                    _link_or_copy(rev / name, tmp / name)
                (history / LOG_FILE).write_text("".join(json.dumps(e) + "\n" for e in [*log, entry]), "utf-8")
        logger.info("pushed %s to %s (revision %d, %s)", folder, repo, n, entry["sha"][:12])
        return PushResult(repo_id, entry["sha"], str(repo))

    def _resolve(self, repo_id: str, revision: str | None) -> tuple[Path, dict[str, Any]]:
        repo = self.repo_dir(repo_id)
        if not repo.exists() and repo in stale_targets(repo.parent):
            with self._lock(repo):  # an interrupted push left the previous version aside: put it back
                pass
        if repo.exists() and not os.access(repo, os.R_OK | os.X_OK):
            raise AdapterRepoNotFoundError(f"{repo_id}: private repo of someone else (no permission on {repo})")
        log = self._log(repo)
        if not log:
            raise AdapterRepoNotFoundError(f"{repo_id}: no such adapter repo in {self.root}")
        if revision in (None, "main"):
            return repo, log[-1]
        rev = str(revision)
        for entry in reversed(log):
            if str(entry["n"]) == rev or (len(rev) >= 4 and entry["sha"].startswith(rev.lower())):
                return repo, entry
        raise AdapterRepoNotFoundError(f"{repo_id}: no revision {revision!r} (has {len(log)})")

    def pull(self, repo_id: str, revision: str | None = None, *, local_dir: str | Path | None = None) -> Path:
        repo, entry = self._resolve(repo_id, revision)
        path = check_served(repo / HISTORY_DIR / str(entry["n"]), repo_id)
        if local_dir is None:
            return path
        local_dir = Path(local_dir)
        if not local_dir.exists():
            with atomic_dir(local_dir, mode=0o700) as tmp:
                for name in entry["files"]:
                    shutil.copyfile(path / name, tmp / name)
            return local_dir
        for name in entry["files"]:
            shutil.copyfile(path / name, local_dir / name)
            owner_only(local_dir / name)
        return local_dir

    def history(self, repo_id: str) -> list[str]:
        repo, _ = self._resolve(repo_id, None)
        return [e["sha"] for e in reversed(self._log(repo))]

    def delete(self, repo_id: str) -> None:
        repo = self.repo_dir(repo_id)
        if not repo.parent.is_dir():
            return
        with self._lock(repo):
            if repo.exists():
                doomed = repo.with_name(f".{repo.name}.deleted.tmp")  # gone from readers at once
                os.replace(repo, doomed)
                shutil.rmtree(doomed)
            (repo.parent / f".{repo.name}.lock").unlink(missing_ok=True)  # its name carries the user id too

    def _exists(self, repo_id: str) -> bool:
        repo = self.repo_dir(repo_id)
        if repo.exists() and not os.access(repo, os.R_OK | os.W_OK | os.X_OK):
            raise StoreAuthError(f"it exists, but belongs to someone else (no permission on {repo})")
        return repo.exists()

    def _list(self, tags: Sequence[str]) -> list[AdapterRef]:
        wanted = set(tags)
        ns = self.root / self.namespace
        for repo in stale_targets(ns):  # finish pushes a crash interrupted
            with self._lock(repo):
                pass
        for doomed in ns.glob(".*.deleted.tmp"):  # and deletions
            shutil.rmtree(doomed, ignore_errors=True)
        refs = []
        for repo in sorted(ns.iterdir()) if ns.is_dir() else []:
            if repo.name.startswith(".") or not repo.is_dir() or not os.access(repo, os.R_OK | os.X_OK):
                continue
            readme = repo / README
            if not readme.is_file():
                continue
            tags = list((metadata_load(readme) or {}).get("tags") or [])
            if not wanted <= set(tags):
                continue
            log = self._log(repo)
            refs.append(ref_from_tags(
                f"{self.namespace}/{repo.name}", tags, private=(repo.stat().st_mode & 0o077) == 0,
                revision=log[-1]["sha"] if log else None, last_modified=log[-1]["date"] if log else None))
        return refs


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hard-link ``src`` to ``dst`` (revisions are immutable, so sharing them is safe), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)

