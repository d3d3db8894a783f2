"""``oppu-hub push`` / ``list`` / ``pull`` / ``delete``: per-user adapters on the Hugging Face Hub or a local store,
and deleting everything kept about a user."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..forget import plan_forget
from ..store import open_store
from ..store_base import AdapterStore
from . import add_command, config_from_args

_STORE_HELP = ("hub:NAMESPACE (Hugging Face Hub; endpoint/token from HF_ENDPOINT, HF_TOKEN or `hf auth login`), "
               "hub (the token's own namespace) or a local store folder; default $OPPU_HUB_STORE, else the local "
               "default store")


@dataclass
class StoreOptions:
    """Which store, and how users are named in it (default: a salted hash on the Hub, the raw id locally)."""

    store: str | None = field(default=None, metadata={"help": _STORE_HELP})
    namespace: str | None = field(default=None, metadata={"help": "user/organisation namespace (overrides the "
                                                                  "store spec's; local default: local)"})
    hash_user_ids: bool = field(default=False, metadata={
        "help": "name users by a salted hash of their id (salt from $OPPU_HUB_USER_SALT); the Hub's default"})
    raw_user_ids: bool = field(default=False, metadata={
        "help": "name users by their raw id, also on the Hub (ids can be personal data); the local default"})

    def open(self, **kwargs: Any) -> AdapterStore:
        if self.hash_user_ids and self.raw_user_ids:
            raise ValueError("--hash_user_ids and --raw_user_ids contradict each other: pass one")
        hashed = True if self.hash_user_ids else False if self.raw_user_ids else None
        return open_store(self.store, namespace=self.namespace, hash_user_ids=hashed, **kwargs)


@dataclass
class PushConfig:
    """Push one adapter folder (PEFT files + oppu.json) as a new revision of its user's repo."""

    folder: str = field(metadata={"help": "the adapter folder to push"})
    private: bool = field(default=True, metadata={
        "help": "create the repo private, and refuse an existing public repo (--no_private: publish)"})
    make_private: bool = field(default=False, metadata={"help": "make an existing public repo private, then push"})
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
    local_dir: str | None = field(default=None, metadata={"help": "copy the files into this folder (owner-only)"})


@dataclass
class DeleteConfig:
    """Delete everything kept about one user: store repos, this machine's downloads of them, then local adapters,
    work folders, profiles and predictions; the plan is printed first, then what was and was not deleted."""

    user: str = field(metadata={"help": "the user's raw id"})
    roots: list[str] = field(default_factory=lambda: ["runs"], metadata={
        "help": "folders searched for the user's adapters, work folders, profiles, run.json entries and predictions"})


def register(subparsers: Any) -> None:
    add_command(subparsers, "push", _push, "push an adapter folder to the Hub or a local store", PushConfig,
                StoreOptions)
    add_command(subparsers, "list", _list, "list adapter repos on the Hub or in a local store", ListConfig,
                StoreOptions)
    add_command(subparsers, "pull", _pull, "download an adapter repo and print its local folder", PullConfig,
                StoreOptions)
    add_command(subparsers, "delete", _delete, "delete a user's adapters, work folders, profiles and predictions "
                "under --roots and their repos in --store (the right to be forgotten)", DeleteConfig, StoreOptions)


def _push(args: argparse.Namespace) -> int:
    config = config_from_args(PushConfig, args)
    store = config_from_args(StoreOptions, args).open(private=config.private)
    result = store.push(config.folder, base_model=config.base_model, commit_message=config.message,
                        make_private=config.make_private)
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


def _delete(args: argparse.Namespace) -> int:
    config = config_from_args(DeleteConfig, args)
    store = config_from_args(StoreOptions, args).open()
    plan = plan_forget(config.user, config.roots, store)
    if not plan.lines():
        print(f"nothing of user {config.user!r} found under {', '.join(config.roots)} or in {store.describe()}")
        return 0
    print("\n".join(plan.lines()), flush=True)
    report = plan.carry_out()
    print("\n".join(report.lines()))
    report.check()  # what is left: one line, exit status 2
    return 0
