"""``oppu-hub push`` / ``list`` / ``pull``: per-user adapters on the Hugging Face Hub or a local store."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import add_command, config_from_args

if TYPE_CHECKING:
    from ..store import AdapterStore

_STORE_HELP = ("hub:NAMESPACE (Hugging Face Hub; endpoint/token from HF_ENDPOINT, HF_TOKEN or `hf auth login`), "
               "hub (the token's own namespace) or a local store folder; default $OPPU_HUB_STORE, else the local "
               "default store")


@dataclass
class StoreOptions:
    """Which store, and how users are named in it."""

    store: str | None = field(default=None, metadata={"help": _STORE_HELP})
    namespace: str | None = field(default=None, metadata={"help": "user/organisation namespace (overrides the "
                                                                  "store spec's; local default: local)"})
    hash_user_ids: bool = field(default=False, metadata={
        "help": "name users by a salted hash of their id (salt from $OPPU_HUB_USER_SALT; also on when "
                "$OPPU_HUB_HASH_USER_IDS=1)"})

    def open(self) -> AdapterStore:
        from ..store import open_store

        return open_store(self.store, namespace=self.namespace, hash_user_ids=self.hash_user_ids or None)


@dataclass
class PushConfig:
    """Push one adapter folder (PEFT files + oppu.json) as a new revision of its user's repo."""

    folder: str = field(metadata={"help": "the adapter folder to push"})
    private: bool = field(default=True, metadata={"help": "create the repo private (--no_private for public)"})
    base_model: str | None = field(default=None, metadata={
        "help": "Hub id of the base, for the model card when oppu.json names a local folder"})
    message: str | None = field(default=None, metadata={"help": "commit message (default: a summary of the adapter)"})


@dataclass
class ListConfig:
    """List the adapter repos of a namespace."""

    user: str | None = field(default=None, metadata={"help": "only this user's adapters (raw id)"})
    task: str | None = field(default=None, metadata={"help": "only this task, e.g. LaMP-2N"})
    json: bool = field(default=False, metadata={"help": "print JSON lines instead of a table"})


@dataclass
class PullConfig:
    """Fetch an adapter repo (at a revision) and print the local folder."""

    repo_id: str = field(metadata={"help": "NAMESPACE/oppu-TASK-USER"})
    revision: str | None = field(default=None, metadata={"help": "revision (commit sha; local: sha or number); "
                                                                 "default the latest"})
    local_dir: str | None = field(default=None, metadata={"help": "copy the files into this folder"})


def register(subparsers: Any) -> None:
    add_command(subparsers, "push", _push, "push an adapter folder to the Hub or a local store", PushConfig,
                StoreOptions)
    add_command(subparsers, "list", _list, "list adapter repos on the Hub or in a local store", ListConfig,
                StoreOptions)
    add_command(subparsers, "pull", _pull, "download an adapter repo and print its local folder", PullConfig,
                StoreOptions)


def _push(args: argparse.Namespace) -> int:
    from ..store import open_store

    config, where = config_from_args(PushConfig, args), config_from_args(StoreOptions, args)
    store = open_store(where.store, namespace=where.namespace, hash_user_ids=where.hash_user_ids or None,
                       private=config.private)
    result = store.push(config.folder, base_model=config.base_model, commit_message=config.message)
    state = "new revision" if result.new_revision else "unchanged"
    print(f"{result.repo_id}@{result.revision} ({state}) {result.url}")
    return 0


def _list(args: argparse.Namespace) -> int:
    config = config_from_args(ListConfig, args)
    refs = config_from_args(StoreOptions, args).open().list(user_id=config.user, task=config.task)
    if config.json:
        for ref in refs:
            print(json.dumps(asdict(ref)))
        return 0
    rows = [("repo", "task", "user", "peft", "private", "revision")]
    rows += [(r.repo_id, r.task or "-", r.user or "-", r.peft_type or "-", str(r.private), (r.revision or "-")[:12])
             for r in refs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _pull(args: argparse.Namespace) -> int:
    config = config_from_args(PullConfig, args)
    print(config_from_args(StoreOptions, args).open().pull(config.repo_id, config.revision, local_dir=config.local_dir))
    return 0
