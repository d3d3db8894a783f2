"""What every adapter store is: the :class:`AdapterStore` interface (push, list, pull, history, delete) and how it
names users and repos, the refs and push results it returns, and the errors it raises. The stores are
:class:`~oppu_hub.hub_store.HubStore` and :class:`~oppu_hub.local_store.LocalStore`; :func:`oppu_hub.store.open_store`
opens one from a spec."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import PEFT_FILES, RECORD_FILE, AdapterMismatchError, AdapterRecord, verify_adapter
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
from .tasks import TASKS

README = "README.md"
# Item ids tie a hashed user back to the (public) dataset: a push that hashes ids leaves them out of oppu.json.
ITEM_ID_FIELDS = ("last_item_id", "trained_item_ids")
REPO_PART = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")  # a namespace or a repo name


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


def ref_from_tags(repo_id: str, tags: list[str] | None, **kw: Any) -> AdapterRef:
    tags = list(tags or [])
    task = next((t for t in tags if re.fullmatch(r"lamp-\d+[a-z]?", t)), None)
    user = next((t[len(USER_TAG_PREFIX):] for t in tags if t.startswith(USER_TAG_PREFIX)), None)
    peft = next((t for t in tags if t in ("lora", "ia3", "prompt-tuning", "adalora", "loha", "lokr", "oft")), None)
    return AdapterRef(repo_id=repo_id, task=task.upper().replace("LAMP", "LaMP") if task else None, user=user,
                      peft_type=peft.upper().replace("-", "_") if peft else None, tags=tuple(tags), **kw)


def check_served(folder: Path, repo_id: str) -> Path:
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
        if namespace is not None and not REPO_PART.match(namespace):
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
            for name in ITEM_ID_FIELDS:
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

