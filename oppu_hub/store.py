"""Where per-user adapters live: one interface, two stores.

* :class:`HubStore` - the Hugging Face Hub (or any Hub-API endpoint) through ``huggingface_hub.HfApi``: one
  private model repo per user and task, ``{namespace}/oppu-{task}-{user}`` (the user named by a salted hash of
  their id unless raw ids are asked for); each push is one commit holding the PEFT files, ``oppu.json`` and the
  model card, and never goes into a public repo unless asked to.
* :class:`LocalStore` - the embedded default: a folder with the same layout, ``{root}/{namespace}/{repo}/``,
  the same files and card; each push is atomic and a new revision, older ones stay readable.

:func:`open_store` picks one from a spec (``hub:NAMESPACE``, ``hf://NAMESPACE`` or a folder),
:func:`push_adapter` pushes a finished adapter folder, :func:`load_user_adapter` loads one onto a base,
refusing an adapter trained on another base, and :func:`forget_user` deletes everything kept about a user
(:func:`plan_forget` finds it all first, :meth:`ForgetPlan.carry_out` deletes it and reports what is left).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import PEFT_FILES, RECORD_FILE, RUN_FILE, AdapterMismatchError, AdapterRecord, check_base, verify_adapter
from .cards import (
    USER_TAG_PREFIX,
    adapter_card,
    hash_user_id,
    hash_user_ids_default,
    slug,
    task_tag,
    user_label,
    user_tag,
)
from .io import atomic_dir, owner_only, private_dir, read_json, recover_dir, safe_name, stale_targets, write_json
from .tasks import TASKS

logger = logging.getLogger(__name__)

STORE_ENV = "OPPU_HUB_STORE"
NAMESPACE_ENV = "OPPU_HUB_NAMESPACE"
DEFAULT_LOCAL_NAMESPACE = "local"
README = "README.md"
HISTORY_DIR = ".history"
LOG_FILE = "log.jsonl"
TIMEOUT_ENV = "OPPU_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
# Item ids tie a hashed user back to the (public) dataset: a push that hashes ids leaves them out of oppu.json.
_ITEM_ID_FIELDS = ("last_item_id", "trained_item_ids")
_REPO_PART = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")


class StoreError(RuntimeError):
    """A store operation failed (base class of the errors below)."""


class StoreAuthError(StoreError):
    """No token, a rejected token, or no permission (HTTP 401/403)."""


class StoreNamespaceError(StoreAuthError):
    """The target namespace (and so the repo) belongs to someone else."""


class StoreConnectionError(StoreError):
    """The store could not be reached."""


class StoreUploadError(StoreConnectionError):
    """A push failed part-way (network failure, server error): nothing local changed; push again to retry."""


class StorePublicRepoError(StoreError):
    """The target repo is public: pushing would publish a user's adapter."""


class AdapterRepoNotFoundError(StoreError):
    """No such adapter repo or revision (or it is private and the token may not read it)."""


class ForgetIncompleteError(StoreError):
    """Deleting a user left something behind (named in the message); running the same deletion again finishes it."""


@dataclass(frozen=True)
class PushResult:
    """The outcome of a push: the repo, the revision now at its head and where it lives."""

    repo_id: str
    revision: str
    url: str
    new_revision: bool = True


@dataclass(frozen=True)
class AdapterRef:
    """One adapter repo as listed by a store."""

    repo_id: str
    task: str | None = None
    user: str | None = None
    peft_type: str | None = None
    private: bool | None = None
    revision: str | None = None
    last_modified: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


def repo_name(task: str, label: str) -> str:
    """``oppu-{task}-{user}``, a valid Hub repo name (<= 96 characters)."""
    return f"oppu-{task_tag(task)}-{slug(label, max_len=96 - 6 - len(task_tag(task)))}"


def _ref_from_tags(repo_id: str, tags: list[str] | None, **kw: Any) -> AdapterRef:
    tags = list(tags or [])
    task = next((t for t in tags if re.fullmatch(r"lamp-\d+[a-z]?", t)), None)
    user = next((t[len(USER_TAG_PREFIX):] for t in tags if t.startswith(USER_TAG_PREFIX)), None)
    peft = next((t for t in tags if t in ("lora", "ia3", "prompt-tuning", "adalora", "loha", "lokr", "oft")), None)
    return AdapterRef(repo_id=repo_id, task=task.upper().replace("LAMP", "LaMP") if task else None, user=user,
                      peft_type=peft.upper().replace("-", "_") if peft else None, tags=tuple(tags), **kw)


def _served(folder: Path, repo_id: str) -> Path:
    """``folder``, pulled from ``repo_id``, once its files verify and its ``oppu.json`` names the user and task
    that the repo's name stands for (:class:`~oppu_hub.adapters.AdapterMismatchError` otherwise)."""
    record = verify_adapter(folder)
    expected = repo_name(record.task, record.user_id)
    if expected != repo_id.split("/")[-1]:
        raise AdapterMismatchError(f"{repo_id} holds the {record.task} adapter of user {record.user_id!r} (its "
                                   f"oppu.json), whose repo is {expected}: refusing to serve it")
    return folder


class AdapterStore(ABC):
    """Where adapters live: ``push`` a folder, ``list`` repos, ``pull`` one (optionally at a revision), ``delete``.

    Args:
        namespace: the user or organisation owning the repos.
        hash_user_ids: name users by a salted hash of their id; default ``$OPPU_HUB_HASH_USER_IDS``, else the
            store's ``hash_by_default`` (the Hub: yes, a local store: no).
        salt: the secret salt of those hashes (default ``$OPPU_HUB_USER_SALT``).
        private: create new repos private (default; the Hub and the local store both honour it), and refuse to
            push into an existing public repo unless a push asks to make it private.
    """

    kind = "store"
    hash_by_default = False

    def __init__(self, namespace: str | None = None, *, hash_user_ids: bool | None = None, salt: str | None = None,
                 private: bool = True):
        if namespace is not None and not _REPO_PART.match(namespace):
            raise ValueError(f"invalid namespace {namespace!r}")
        self._namespace = namespace
        self.hash_user_ids = hash_user_ids_default(self.hash_by_default) if hash_user_ids is None else hash_user_ids
        self.salt = salt
        self.private = private

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            raise StoreError("this store has no namespace")
        return self._namespace

    # -- naming ---------------------------------------------------------------------------------------------
    def label(self, user_id: str) -> str:
        """How ``user_id`` is named in repo names, tags and cards (raw, or salted hash)."""
        return user_label(user_id, hash_user_ids=self.hash_user_ids, salt=self.salt)

    def check_naming(self) -> None:
        """Fail now, not after training, when users cannot be named (hashed ids without a salt)."""
        self.label("")

    def repo_id(self, user_id: str, task: str) -> str:
        """The repo of a user's adapter for a task: ``{namespace}/oppu-{task}-{user}``."""
        return f"{self.namespace}/{repo_name(task, self.label(user_id))}"

    def filter_tags(self, user_id: str | None = None, task: str | None = None) -> list[str]:
        tags = ["oppu"]
        if task:
            tags.append(task_tag(task))
        if user_id is not None:
            tags.append(user_tag(self.label(user_id)))
        return tags

    def repo_files(self, folder: str | Path, record: AdapterRecord, repo_id: str,
                   base_model: str | None = None) -> dict[str, Path | bytes]:
        """What one push commits: the PEFT files, ``oppu.json`` (when hashing: the user id replaced by its hash,
        the item ids left out) and the model card ``README.md``."""
        label = self.label(record.user_id)
        data = dataclasses.asdict(record)
        if self.hash_user_ids:
            data["user_id"] = label
            data["user_id_hashed"] = True
            for name in _ITEM_ID_FIELDS:
                data.pop(name, None)
        card = adapter_card(record, repo_id=repo_id, label=label, base_model=base_model)
        files: dict[str, Path | bytes] = {name: Path(folder) / name for name in PEFT_FILES}
        files[RECORD_FILE] = (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode()
        files[README] = str(card).encode()
        return files

    def commit_message(self, record: AdapterRecord) -> str:
        return (f"oppu-hub: {record.task} {record.peft_type} adapter of user {self.label(record.user_id)} "
                f"({record.num_history_items} history items)")

    def _keeps_private(self, repo_id: str, public: bool | None, private: bool | None, make_private: bool) -> bool:
        """Whether a push leaves ``repo_id`` private. ``public`` is the repo's visibility (``None``: a new repo).
        An existing repo keeps its visibility, except that a public repo is made private with ``make_private``;
        a push that wants a private repo (the default) refuses a public one otherwise."""
        want_private = self.private if private is None else private
        if public is None:
            return want_private
        if public and want_private and not make_private:
            raise StorePublicRepoError(
                f"{repo_id} is public: pushing would publish this user's adapter; pass --make_private to make the "
                f"repo private first, or --no_private to publish it")
        return not public or make_private

    # -- the interface --------------------------------------------------------------------------------------
    @abstractmethod
    def push(self, folder: str | Path, *, base_model: str | None = None, commit_message: str | None = None,
             private: bool | None = None, make_private: bool = False) -> PushResult:
        """Push the adapter in ``folder`` (left untouched) as a new revision of its user's repo. A public repo is
        refused (:class:`StorePublicRepoError`) unless ``make_private`` makes it private first or the push is
        public (``private=False``)."""

    def list(self, user_id: str | None = None, task: str | None = None) -> list[AdapterRef]:
        """The namespace's adapter repos, optionally of one user and/or task."""
        return self._list(self.filter_tags(user_id, task))

    @abstractmethod
    def _list(self, tags: Sequence[str]) -> list[AdapterRef]:
        """The namespace's repos carrying every tag of ``tags``, sorted by repo id."""

    @abstractmethod
    def pull(self, repo_id: str, revision: str | None = None, *, local_dir: str | Path | None = None) -> Path:
        """A local folder holding the adapter of ``repo_id`` at ``revision`` (default: the latest). A new
        ``local_dir`` appears whole and owner-only; files copied into an existing one are made owner-only."""

    @abstractmethod
    def history(self, repo_id: str) -> list[str]:
        """The revisions of a repo, newest first."""

    @abstractmethod
    def delete(self, repo_id: str) -> None:
        """Delete a repo with all its revisions (nothing happens when it does not exist)."""

    @abstractmethod
    def _exists(self, repo_id: str) -> bool:
        """Whether ``repo_id`` exists; :class:`StoreAuthError` when it exists but may not be seen."""

    def _labels(self, user_id: str) -> set[str]:
        """Every name the user's repos can carry: the store's label, the raw id, and the hash when a salt is known."""
        labels = {self.label(user_id), str(user_id)}
        with contextlib.suppress(ValueError):  # no salt: only repos named by the raw id can be found
            labels.add(hash_user_id(user_id, self.salt))
        return labels

    def possible_repos(self, user_id: str) -> list[str]:
        """Every repo id an adapter of ``user_id`` can have in the namespace (each task, each of :meth:`_labels`)."""
        return sorted({f"{self.namespace}/{repo_name(task, label)}" for task in TASKS
                       for label in self._labels(user_id)})

    def user_repos(self, user_id: str) -> tuple[list[str], dict[str, str]]:
        """The repos of ``user_id`` in the namespace (all tasks): those tagged with one of their names, and those
        named as theirs (an empty repo a failed push left is found too); and what exists but may not be seen, as
        ``{repo id: why}``."""
        repos = {ref.repo_id for label in self._labels(user_id) for ref in self._list(["oppu", user_tag(label)])}
        hidden = {}
        for repo_id in set(self.possible_repos(user_id)) - repos:
            try:
                if self._exists(repo_id):
                    repos.add(repo_id)
            except StoreAuthError as e:
                hidden[repo_id] = str(e)
        return sorted(repos), hidden

    def cached_copies(self, repo_ids: Sequence[str]) -> list[Path]:
        """This machine's downloads of ``repo_ids`` kept apart from the store (none for a local store)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def describe(self) -> str:
        return self.kind


def _request_url(error: BaseException) -> str:
    """The URL of the HTTP request behind ``error`` (an httpx or huggingface_hub error, or one they caused)."""
    for e in (error, error.__cause__, error.__context__):
        response = getattr(e, "response", None)
        with contextlib.suppress(AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is set
            return str((response if response is not None else e).request.url)
    return ""


_STEPS = (("/preupload/", "preupload"), ("/commit/", "commit"), ("/api/repos/create", "create repo"),
          ("/settings", "make private"), ("/api/repos/delete", "delete repo"), ("/api/whoami", "whoami"),
          ("/api/validate-yaml", "validate card"), ("/resolve/", "download"), ("/tree/", "list files"),
          ("/commits/", "history"), ("/api/models", "repo info"))


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (huggingface_hub's span several)."""
    return " ".join(str(error).split())


def _step(error: BaseException) -> str:
    """Which Hub call failed (``preupload``, ``commit``...), from the URL of the failed request."""
    url = _request_url(error)
    return next((step for fragment, step in _STEPS if fragment in url), "request")


# ------------------------------------------------------------------------------------------------------------
# Hugging Face Hub
# ------------------------------------------------------------------------------------------------------------
class HubStore(AdapterStore):
    """Adapters on the Hugging Face Hub (or any Hub-API endpoint). Users are named by a salted hash of their id
    unless ``hash_user_ids=False`` (or ``$OPPU_HUB_HASH_USER_IDS=0``).

    Args:
        namespace: the user or organisation to push to and list (default: the token's user).
        endpoint: the Hub URL (default ``$HF_ENDPOINT``, else https://huggingface.co).
        token: an access token (default: ``$HF_TOKEN`` or the one saved by ``hf auth login``).
        timeout: seconds a Hub request may stall before it fails (default ``$OPPU_HUB_TIMEOUT``, else 60);
            ``huggingface_hub``'s shared client has none, so a stalled Hub would hang a push forever. It is set
            on that shared client, so it holds for the whole process.
    """

    kind = "hub"
    hash_by_default = True

    def __init__(self, namespace: str | None = None, *, endpoint: str | None = None, token: str | None = None,
                 hash_user_ids: bool | None = None, salt: str | None = None, private: bool = True,
                 timeout: float | None = None):
        super().__init__(namespace, hash_user_ids=hash_user_ids, salt=salt, private=private)
        from huggingface_hub import HfApi, constants

        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        self.token = token
        self.timeout = float(timeout or os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
        self.api = HfApi(endpoint=self.endpoint, token=token)

    def describe(self) -> str:
        return f"hub:{self._namespace or '<token user>'} at {self.endpoint}"

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._namespace = self.whoami()["name"]
        return self._namespace

    def _token(self) -> str:
        from huggingface_hub import get_token

        token = self.token or get_token()
        if not token:
            raise StoreAuthError(f"no Hugging Face token for {self.endpoint}: run `hf auth login` or set HF_TOKEN")
        return token

    def whoami(self) -> dict[str, Any]:
        """The token's account (``name``, ``orgs``...)."""
        token = self._token()
        with self._errors("whoami"):
            return self.api.whoami(token=token)

    def _check_namespace(self) -> None:
        """Raise :class:`StoreNamespaceError` unless the namespace (default: the token's user) is the token's user
        or one of its organisations: elsewhere it may write nothing, and the Hub hides private repos from it."""
        me = self.whoami()
        if self._namespace is None:
            self._namespace = me["name"]
        writable = {me.get("name"), *(o.get("name") for o in me.get("orgs") or [])}
        if self._namespace not in writable:
            raise StoreNamespaceError(
                f"namespace {self._namespace!r} belongs to someone else: the token of {me.get('name')!r} may not "
                f"write there nor see its private repos (it may write to "
                f"{', '.join(sorted(n for n in writable if n))})")

    @contextlib.contextmanager
    def _errors(self, action: str, repo_id: str | None = None, *, upload: bool = False) -> Iterator[None]:
        """Run Hub calls with :attr:`timeout` and translate huggingface_hub/httpx failures into the store's errors,
        naming the repo and the step (``preupload``, ``commit``...) that failed."""
        import httpx2
        from huggingface_hub import get_session
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        get_session().timeout = httpx2.Timeout(self.timeout)
        what = f"{action} {repo_id}" if repo_id else action
        retry = "; the local adapter folder is untouched: run the push again to retry" if upload else ""
        try:
            yield
        except RevisionNotFoundError as e:
            raise AdapterRepoNotFoundError(f"{what}: no such revision on {self.endpoint}") from e
        except RepositoryNotFoundError as e:
            raise AdapterRepoNotFoundError(
                f"{what}: repo not found on {self.endpoint}, or it is private and this token may not read it "
                f"(log in with the owner's token)") from e
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            step = _step(e)
            if status == 401:
                raise StoreAuthError(f"{what}: the token was rejected by {self.endpoint} at step '{step}' (HTTP "
                                     f"401); run `hf auth login` or set HF_TOKEN") from e
            if status == 403:
                raise StoreAuthError(f"{what}: permission denied by {self.endpoint} at step '{step}' (HTTP 403): "
                                     f"the token may not write there (read-only token, or the repo belongs to "
                                     f"someone else)") from e
            error = StoreUploadError if upload else StoreError
            raise error(f"{what} failed at step '{step}' (HTTP {status}){retry}: {_one_line(e)}") from e
        except (httpx2.TransportError, LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
            error = StoreUploadError if upload else StoreConnectionError
            raise error(f"{what} failed at step '{_step(e)}': no answer from {self.endpoint} "
                        f"({type(e).__name__}: {_one_line(e)}){retry}") from e

    def push(self, folder: str | Path, *, base_model: str | None = None, commit_message: str | None = None,
             private: bool | None = None, make_private: bool = False) -> PushResult:
        from huggingface_hub import CommitOperationAdd

        record = verify_adapter(folder)
        self.check_naming()
        token = self._token()
        self._check_namespace()
        repo_id = self.repo_id(record.user_id, record.task)
        files = self.repo_files(folder, record, repo_id, base_model)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes)
                                         else str(content)) for name, content in files.items()]
        with self._errors("push to", repo_id, upload=True):
            want_private = self.private if private is None else private
            self.api.create_repo(repo_id, private=want_private, exist_ok=True, token=token)
            info = self.api.model_info(repo_id, token=token)  # an existing repo keeps its visibility: check it
            public = not info.private
            if self._keeps_private(repo_id, public, private, make_private) and public:
                self.api.update_repo_settings(repo_id, private=True, token=token)
                logger.info("made %s private", repo_id)
            commit = self.api.create_commit(repo_id, operations, commit_message=commit_message
                                            or self.commit_message(record), token=token)
        logger.info("pushed %s to %s@%s", folder, repo_id, commit.oid)
        return PushResult(repo_id=repo_id, revision=commit.oid, url=f"{self.endpoint}/{repo_id}",
                          new_revision=commit.oid != info.sha)

    def _list(self, tags: Sequence[str]) -> list[AdapterRef]:
        with self._errors("list", self._namespace):
            models = self.api.list_models(author=self.namespace, filter=list(tags),
                                          expand=["sha", "private", "tags", "lastModified"])
            refs = [_ref_from_tags(m.id, m.tags, private=m.private, revision=m.sha,
                                   last_modified=m.last_modified.isoformat() if m.last_modified else None)
                    for m in models]
        return sorted(refs, key=lambda r: r.repo_id)

    def pull(self, repo_id: str, revision: str | None = None, *, local_dir: str | Path | None = None) -> Path:
        """Files come only once the Hub has said, in this call, that this store's token may read ``repo_id`` at
        ``revision`` (``model_info``; then that very commit is downloaded): a refused token or a Hub that does not
        answer gets an error, never a cached copy. Without ``local_dir`` the files go to the Hugging Face cache,
        where the repo's folder is owner-only."""
        from huggingface_hub import snapshot_download

        def download(into: Path | None) -> Path:
            return Path(snapshot_download(repo_id, revision=info.sha, token=self.token, endpoint=self.endpoint,
                                          local_dir=into))

        with self._errors("pull", repo_id):
            info = self.api.model_info(repo_id, revision=revision, token=self.token)
            if local_dir is None:
                cache = private_dir(self._cache_dir(repo_id))  # owner-only before anything is downloaded into it
                folder = download(None)
                owner_only(cache)
                return _served(folder, repo_id)
            local_dir = Path(local_dir)
            if not local_dir.exists():
                with atomic_dir(local_dir, mode=0o700) as tmp:
                    _served(download(tmp), repo_id)
                return local_dir
            download(local_dir)
        for name in [*(s.rfilename for s in info.siblings or []), ".cache"]:
            if (local_dir / name).exists():
                owner_only(local_dir / name)
        return _served(local_dir, repo_id)

    def history(self, repo_id: str) -> list[str]:
        with self._errors("history of", repo_id):
            return [c.commit_id for c in self.api.list_repo_commits(repo_id)]

    def delete(self, repo_id: str) -> None:
        """Delete the repo on the Hub (the owner's token); this machine's downloads of it are
        :meth:`cached_copies`."""
        token = self._token()
        with self._errors("delete", repo_id):
            self.api.delete_repo(repo_id, token=token, missing_ok=True)

    def user_repos(self, user_id: str) -> tuple[list[str], dict[str, str]]:
        repos, hidden = super().user_repos(user_id)
        try:
            self._check_namespace()
        except StoreNamespaceError as e:  # the Hub answers "not found" for the private repos it hides from the token
            hidden[f"the user's repos in {self.describe()}"] = str(e)
        return repos, hidden

    def _exists(self, repo_id: str) -> bool:
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

        with self._errors("check", repo_id):
            try:
                self.api.model_info(repo_id, token=self.token)
            except RepositoryNotFoundError:
                return False
            except HfHubHTTPError as e:
                status = e.response.status_code if e.response is not None else None
                if status in (401, 403):
                    raise StoreAuthError(f"it exists, but {self.endpoint} does not let this token see it "
                                         f"(HTTP {status}): delete it with the owner's token") from e
                raise
        return True

    @staticmethod
    def _cache_dir(repo_id: str) -> Path:
        """The repo's folder in the Hugging Face cache: ``models--{namespace}--{name}``."""
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")

    def cached_copies(self, repo_ids: Sequence[str]) -> list[Path]:
        """The Hugging Face cache's folders of ``repo_ids`` on this machine (and their lock folders), by name."""
        folders = [self._cache_dir(repo_id) for repo_id in repo_ids]
        return [p for f in folders for p in (f, f.parent / ".locks" / f.name) if p.exists()]


# ------------------------------------------------------------------------------------------------------------
# Local folder
# ------------------------------------------------------------------------------------------------------------
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
        if len(parts) != 2 or not all(_REPO_PART.match(p) and ".." not in p for p in parts):
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
        import fcntl

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
        path = _served(repo / HISTORY_DIR / str(entry["n"]), repo_id)
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
        from huggingface_hub import metadata_load

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
            refs.append(_ref_from_tags(
                f"{self.namespace}/{repo.name}", tags, private=(repo.stat().st_mode & 0o077) == 0,
                revision=log[-1]["sha"] if log else None, last_modified=log[-1]["date"] if log else None))
        return refs


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hard-link ``src`` to ``dst`` (revisions are immutable, so sharing them is safe), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ------------------------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------------------------
def default_store_dir() -> Path:
    """The embedded store used when nothing is configured: ``{oppu-hub cache}/store``."""
    from .models import cache_dir

    return cache_dir() / "store"


def open_store(spec: str | os.PathLike[str] | AdapterStore | None = None, *, namespace: str | None = None,
               hash_user_ids: bool | None = None, salt: str | None = None, endpoint: str | None = None,
               token: str | None = None, private: bool = True) -> AdapterStore:
    """A store from a spec: ``hub:NAMESPACE``, ``hf://NAMESPACE`` or ``hub`` (the token's user) for the Hub;
    a folder (or ``local:FOLDER``) for a :class:`LocalStore`; ``None`` for ``$OPPU_HUB_STORE``, else the local
    default :func:`default_store_dir`. An explicit ``namespace`` overrides the spec's."""
    if isinstance(spec, AdapterStore):
        return spec
    text = str(spec or os.environ.get(STORE_ENV) or default_store_dir())
    common = {"hash_user_ids": hash_user_ids, "salt": salt, "private": private}
    for prefix in ("hf://", "hub:", "hf:"):
        if text.startswith(prefix) or text == prefix.rstrip(":/"):
            ns = text[len(prefix):].strip("/") or None
            return HubStore(namespace or ns, endpoint=endpoint, token=token, **common)
    for prefix in ("local:", "file://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return LocalStore(text, namespace, **common)


def push_adapter(folder: str | Path, store: AdapterStore | str | None = None, **kwargs: Any) -> PushResult:
    """Push one finished adapter folder (the hook ``train-users --push_to_hub`` calls after each user)."""
    return open_store(store).push(folder, **kwargs)


def load_user_adapter(model: Any, store: AdapterStore | str | None, repo_id_or_path: str | os.PathLike[str],
                      revision: str | None = None, adapter_name: str = "default", *,
                      base_fingerprint: str | None = None, is_trainable: bool = False) -> Any:
    """Load a user's adapter onto ``model`` and return the ``PeftModel``.

    ``repo_id_or_path`` is an adapter folder or a repo of ``store`` (pulled at ``revision``). The adapter's
    ``oppu.json`` must name the loaded base (:func:`oppu_hub.models.model_fingerprint`, or pass
    ``base_fingerprint`` when it is known), else :class:`~oppu_hub.adapters.AdapterBaseMismatchError`. A
    ``PeftModel`` gets the adapter added under ``adapter_name`` (``load_adapter``), a plain model is wrapped.
    """
    from peft import PeftModel

    from .models import model_fingerprint

    local = Path(repo_id_or_path)
    if local.is_dir():
        folder = local
        where = str(local)
    else:
        folder = open_store(store).pull(str(repo_id_or_path), revision)  # checks the repo's user and task
        where = f"{repo_id_or_path}@{revision or 'main'}"
    record = verify_adapter(folder)
    check_base(record, base_fingerprint or model_fingerprint(model), where=where)
    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=adapter_name, is_trainable=is_trainable)
        return model
    return PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name, is_trainable=is_trainable)


USERS_FILE = "users.json"  # question id -> user, beside the prediction files of an evaluation
Change = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class ForgetReport:
    """What :meth:`ForgetPlan.carry_out` did: the local paths it removed (cached downloads included), the files it
    rewrote without the user, the store repos it deleted, and what is left, ``{what: why}``."""

    user_id: str
    removed: list[Path] = field(default_factory=list)
    rewritten: list[Path] = field(default_factory=list)
    repos: list[str] = field(default_factory=list)
    remaining: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """What was deleted and what was not, one line each."""
        return [*(f"deleted repo {r}" for r in self.repos), *(f"removed {p}" for p in self.removed),
                *(f"removed the user's entries from {p}" for p in self.rewritten),
                *(f"not deleted: {what}: {why}" for what, why in self.remaining.items())]

    def check(self) -> ForgetReport:
        """This report, or :class:`ForgetIncompleteError` on one line naming what is left when something is."""
        if self.remaining:
            left = "; ".join(f"{what} ({why})" for what, why in self.remaining.items())
            raise ForgetIncompleteError(
                f"user {self.user_id!r}: {len(self.remaining)} thing(s) not deleted, "
                f"{len(self.repos) + len(self.removed) + len(self.rewritten)} deleted; left: {left}; run the same "
                f"delete again to finish")
        return self


@dataclass
class ForgetPlan:
    """Everything to delete about a user, found before anything is deleted (:func:`plan_forget`): the user's
    ``repos`` in ``store`` and what it would not show (``hidden``, ``{what: why}``), this machine's ``cached``
    downloads of the user's repos, and local paths to ``remove`` and JSON files to ``rewrite`` without the user
    (each with the change that drops them)."""

    user_id: str
    store: AdapterStore | None = None
    repos: list[str] = field(default_factory=list)
    hidden: dict[str, str] = field(default_factory=dict)
    cached: list[Path] = field(default_factory=list)
    remove: list[Path] = field(default_factory=list)
    rewrite: dict[Path, Change] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The plan, one line per thing to delete or that cannot be deleted; none when nothing was found."""
        where = self.store.describe() if self.store else ""
        return [*(f"to delete: repo {r} ({where})" for r in self.repos),
                *(f"to remove: {p} (this machine's download of a repo of the user)" for p in self.cached),
                *(f"to remove: {p}" for p in self.remove),
                *(f"to remove the user's entries from: {p}" for p in self.rewrite),
                *(f"cannot delete: {what}: {why}" for what, why in self.hidden.items())]

    def carry_out(self) -> ForgetReport:
        """Delete what was planned: the store's repos first, then the cached downloads (whatever the store
        answered), then the local files. Failures are recorded in the report, not raised (:meth:`ForgetReport.check`);
        what was left is found again by the next plan."""
        report = ForgetReport(self.user_id, remaining=dict(self.hidden))
        for repo_id in self.repos:
            try:
                self.store.delete(repo_id)  # type: ignore[union-attr]  # repos come from a store
                report.repos.append(repo_id)
            except (StoreError, OSError) as e:  # OSError: a local store's folder
                report.remaining[f"repo {repo_id}"] = str(e)
        for path in [*self.cached, *self.remove]:
            try:
                _remove(path)
                report.removed.append(path)
            except OSError as e:
                report.remaining[str(path)] = str(e)
        failed: set[Path] = set()
        for path, change in self.rewrite.items():
            if path.name == USERS_FILE and path.parent in failed:  # the map of what is left there: keep it
                report.remaining[str(path)] = "kept: it names the user's questions still in the files beside it"
                continue
            try:
                write_json(path, change(read_json(path)))
                report.rewritten.append(path)
            except (OSError, ValueError) as e:
                failed.add(path.parent)
                report.remaining[str(path)] = str(e)
        return report


def forget_user(user_id: str, roots: Sequence[str | Path] = (), store: AdapterStore | None = None) -> ForgetReport:
    """Delete everything oppu-hub keeps about ``user_id`` (the right to be forgotten), for a Space or a script:
    :func:`plan_forget`, then :meth:`ForgetPlan.carry_out`; raises :class:`ForgetIncompleteError`, naming what is
    left, when something could not be deleted (running it again finishes the job)."""
    return plan_forget(user_id, roots, store).carry_out().check()


def plan_forget(user_id: str, roots: Sequence[str | Path] = (), store: AdapterStore | None = None) -> ForgetPlan:
    """Find everything oppu-hub keeps about ``user_id``, deleting nothing.

    Under each folder of ``roots`` (searched recursively): the user's adapter folders of every task and variant
    (named by the user, their ``oppu.json`` naming them), training work folders (``.{user}.work``: optimizer
    state and the user's data order) and interrupted temporaries; cached profiles (``{user}.json`` naming them);
    the user's entries in ``run.json``; and the user's predictions in prediction folders with a ``users.json``
    (question id -> user). In ``store``: every adapter repo of the user (:meth:`AdapterStore.user_repos`; on the
    Hub this needs the owner's token, and what the token may not see is recorded, not skipped) and this machine's
    downloads of any repo the user's adapters can have there (by name, whatever the store answers). A missing
    root, or a store that names users by a hash it has no salt for, is an error: nothing could be found right."""
    missing = [str(r) for r in roots if not Path(r).is_dir()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: no such folder to delete user {user_id!r} from")
    plan = ForgetPlan(user_id, store)
    if store is not None:
        store.check_naming()
    for root in roots:
        _plan_local(plan, Path(root))
    if store is not None:
        _plan_store(plan, store)
    return plan


def _plan_store(plan: ForgetPlan, store: AdapterStore) -> None:
    try:
        plan.repos, plan.hidden = store.user_repos(plan.user_id)
    except StoreError as e:
        plan.hidden[f"the user's repos in {store.describe()}"] = str(e)
    try:
        plan.cached = store.cached_copies(sorted({*plan.repos, *store.possible_repos(plan.user_id)}))
    except StoreError as e:  # a Hub store without a namespace, whose token the Hub refused: no names to look for
        plan.hidden[f"this machine's downloads of the user's repos from {store.describe()}"] = str(e)


def _plan_local(plan: ForgetPlan, root: Path) -> None:
    user_id = plan.user_id
    name = safe_name(user_id)
    temporary = re.compile(rf"^\.{re.escape(name)}\.(work|lock|.+\.tmp|old-\d+)$")  # a killed run's leftovers
    for top, dirs, files in os.walk(root):
        here = Path(top)
        for d in list(dirs):
            path = here / d
            if d == HISTORY_DIR or temporary.match(d) or (d == name and _names_user(path / RECORD_FILE, user_id)):
                dirs.remove(d)  # not searched further: to remove, or a local store's revisions (the store's)
                if d != HISTORY_DIR:
                    plan.remove.append(path)
        for f in files:
            path = here / f
            if temporary.match(f) or (f == f"{name}.json" and _names_user(path, user_id)):
                plan.remove.append(path)
            elif f == RUN_FILE:
                _plan_rewrite(plan, path, lambda run: {
                    k: [u for u in v if u != user_id] if isinstance(v, list)
                    else {u: x for u, x in v.items() if u != user_id} if isinstance(v, dict) else v
                    for k, v in run.items()})
            elif f == USERS_FILE:
                _plan_predictions(plan, path)


def _names_user(path: Path, user_id: str) -> bool:
    """Whether ``path`` is a JSON record (``oppu.json``, a cached profile) of ``user_id``."""
    if not path.is_file():
        return False
    data = read_json(path)
    return isinstance(data, dict) and data.get("user_id") == user_id


def _plan_rewrite(plan: ForgetPlan, path: Path, change: Change) -> None:
    """Plan to rewrite the JSON object in ``path`` as ``change(obj)`` when that differs."""
    data = read_json(path)
    if isinstance(data, dict) and change(data) != data:
        plan.rewrite[path] = change


def _plan_predictions(plan: ForgetPlan, users_file: Path) -> None:
    """Plan to drop the user's questions from the LaMP-format files beside ``users_file`` (``{question id: user}``),
    then from ``users_file`` itself."""
    users = read_json(users_file)
    ids = {q for q, u in users.items() if u == plan.user_id} if isinstance(users, dict) else set()
    if not ids:
        return
    for path in sorted(users_file.parent.glob("*.json")):
        if path != users_file:
            _plan_rewrite(plan, path, lambda d: {**d, "golds": [g for g in d["golds"] if not (
                isinstance(g, dict) and str(g.get("id")) in ids)]} if isinstance(d.get("golds"), list) else d)
    _plan_rewrite(plan, users_file, lambda d: {q: u for q, u in d.items() if q not in ids})


def _remove(path: Path) -> None:
    """Remove a file or a folder tree; one already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
