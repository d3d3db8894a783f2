"""Deleting everything oppu-hub keeps about a user (the right to be forgotten): :func:`plan_forget` finds it all
first (store repos, this machine's downloads of them, local adapters, work folders, profiles, run entries and
predictions), :meth:`ForgetPlan.carry_out` deletes it and reports what is left, :func:`forget_user` does both."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import RECORD_FILE, RUN_FILE
from .io import read_json, safe_name, write_json
from .local_store import HISTORY_DIR
from .store_base import AdapterStore, StoreError

USERS_FILE = "users.json"  # question id -> user, beside the prediction files of an evaluation
Change = Callable[[dict[str, Any]], dict[str, Any]]


class ForgetIncompleteError(StoreError):
    """Deleting a user left something behind (named in the message); running the same deletion again finishes it."""


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
