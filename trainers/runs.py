"""The run over many users behind ``train-users``: one driver that owns the loop and its records, and
interchangeable executors that do the training.

The driver (:func:`train_users`) refuses what cannot run (:func:`check_config`), selects the users, skips those
whose adapter is finished (it verifies: :func:`oppu_hub.adapters.verify_adapter`; not with ``--update``), hands the
others to an executor and records what each came to -- ``trained``, ``updated``, ``skipped`` or ``failed`` (with
the error), seconds and optimizer steps -- in a :class:`UserRunReport`, merged into ``run.json`` after every user
(:func:`record_run`: runs on one folder add up), under one progress bar. ``on_done`` (by default the push to
``--hub_store``) runs for every new or updated adapter; its failure is that user's failure.

An :class:`Executor` trains a list of users and reports an :class:`Outcome` for each: :class:`SequentialExecutor`
(``UserAdapterTrainer``, one user after another), :class:`ConcurrentExecutor` (users in the slots of
:mod:`trainers.concurrent`), and the Ray actor pool (:class:`oppu_hub.distributed.RayExecutor`, whose actors run
the local executor the config asks for). Every executor plans users with :func:`trainers.user.plan_job` on a
:class:`Workspace`, so what is skipped, resumed or updated, what is refused and the adapter record are the same
whichever trains; both local executors resume an interrupted user from its epoch checkpoint in ``.{user}.work``.

Several runs may share one adapters folder: each user is trained under a claim (:class:`UserClaims`, a lock file
``.{user}.lock``), and a user another live run holds is skipped as ``being trained by another run``; temporaries
are cleaned up only by a run alone in the folder (:func:`oppu_hub.io.folder_in_use`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import datasets
from tqdm.auto import tqdm

from oppu_hub.adapters import RUN_FILE, is_complete
from oppu_hub.data import LampSplit, load_task_split
from oppu_hub.io import FileLock, folder_in_use, private_dir, read_json, recover_dir, safe_name, write_json
from oppu_hub.models import BaseModelConfig, load_base, model_fingerprint
from oppu_hub.profiles import ProfileStore
from oppu_hub.prompts import PromptBuilder
from oppu_hub.store import open_store, push_adapter

from .base import check_base_record
from .common import MAX_AUTO_SLOTS, auto_slots, check_training, set_threads
from .concurrent import ConcurrentLoraTrainer, UserResult
from .peft_types import PEFT_TYPES
from .user import UserJob, plan_job, train_job
from .user_config import UserAdapterConfig

logger = logging.getLogger(__name__)

BUSY = "being trained by another run"


@dataclass
class Outcome:
    """What one user's training came to: ``trained``, ``updated``, ``skipped`` or ``failed`` (then ``error``),
    its seconds, the optimizer steps it made (fewer than planned when it resumed from a checkpoint) and a ``note``
    saying why, where that is not plain (:data:`BUSY`)."""

    user_id: str
    outcome: str
    seconds: float = 0.0
    steps: int = 0
    error: str | None = None
    note: str | None = None

    @classmethod
    def failed(cls, user_id: str, error: BaseException, seconds: float = 0.0) -> Outcome:
        return cls(user_id, "failed", round(seconds, 2), error=f"{type(error).__name__}: {error}")


Emit = Callable[[Outcome], None]


@dataclass
class UserRunReport:
    """What a ``train_users`` run did, per user; ``run.json`` holds those of every run on its folder merged
    (:meth:`merge`). ``notes``: why a user was skipped, where that is not plain."""

    trained: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        if outcome.outcome == "failed":
            self.failed[outcome.user_id] = str(outcome.error)
        else:
            getattr(self, outcome.outcome).append(outcome.user_id)
        self.seconds[outcome.user_id] = outcome.seconds
        if outcome.steps:
            self.steps[outcome.user_id] = outcome.steps
        if outcome.note:
            self.notes[outcome.user_id] = outcome.note

    def merge(self, outcome: Outcome) -> None:
        """Record ``outcome`` in place of the user's entries of earlier runs, except that a skip keeps an earlier
        ``trained`` or ``updated`` (the run that made the adapter says more than one that left it alone)."""
        if outcome.outcome == "skipped" and outcome.user_id in (*self.trained, *self.updated):
            return
        for f in dataclasses.fields(self):
            entries = getattr(self, f.name)
            if isinstance(entries, list):
                setattr(self, f.name, [u for u in entries if u != outcome.user_id])
            else:
                entries.pop(outcome.user_id, None)
        self.add(outcome)

    def sort(self, users: Sequence[str]) -> None:
        """Put every entry in the order of ``users`` (executors report users as they finish); users of earlier
        runs stay first, in their order."""
        order = {u: n for n, u in enumerate(users)}
        for f in dataclasses.fields(self):
            entries = getattr(self, f.name)
            if isinstance(entries, list):
                entries.sort(key=lambda u: order.get(u, -1))
            else:
                setattr(self, f.name, dict(sorted(entries.items(), key=lambda kv: order.get(kv[0], -1))))

    @classmethod
    def read(cls, path: Path) -> UserRunReport:
        """The report in ``path`` (empty when there is none); one that is not a report is an error naming it."""
        if not path.exists():
            return cls()
        data, report = read_json(path), cls()
        for f in dataclasses.fields(cls):
            value = data.get(f.name, getattr(report, f.name)) if isinstance(data, dict) else None
            if not isinstance(value, type(getattr(report, f.name))):
                raise ValueError(f"{path}: not a train-users report ('{f.name}' is not a JSON "
                                 f"{'list' if isinstance(getattr(report, f.name), list) else 'object'})")
            setattr(report, f.name, value)
        return report


def record_run(folder: Path, outcomes: Sequence[Outcome], users: Sequence[str]) -> None:
    """Merge ``outcomes`` into ``folder``'s ``run.json`` (:meth:`UserRunReport.merge`, entries in the order of
    ``users``): read, merged and atomically replaced under a lock, as runs on one folder may finish users at once."""
    path = folder / RUN_FILE
    with FileLock.guarding(path):
        report = UserRunReport.read(path)
        for outcome in outcomes:
            report.merge(outcome)
        report.sort(users)
        write_json(path, dataclasses.asdict(report))


class UserClaims:
    """The users this process trains in an adapters folder, each claimed by an exclusive lock on
    ``.{user}.lock`` there (:class:`~oppu_hub.io.FileLock`, gone with the process) while it trains: another run
    skips a claimed user. Leaving the ``with`` block releases every claim still held."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[str, FileLock] = {}

    def take(self, user_id: str) -> bool:
        """Claim ``user_id``; ``False`` when another run holds it."""
        lock = FileLock.try_acquire(self.folder / f".{safe_name(user_id)}.lock")
        if lock is not None:
            self._held[user_id] = lock
        return lock is not None

    def release(self, user_id: str) -> None:
        lock = self._held.pop(user_id, None)
        if lock is not None:
            lock.release()

    def __enter__(self) -> UserClaims:
        return self

    def __exit__(self, *exc: object) -> None:
        for user_id in list(self._held):
            self.release(user_id)


# ---------------------------------------------------------------------------------------------- executors


@dataclass
class Workspace:
    """What training users in one process needs, loaded once: the base (model, tokenizer, fingerprint), the
    split, the users' profiles and the prompt builder."""

    config: UserAdapterConfig
    split: LampSplit
    model: Any
    tokenizer: Any
    fingerprint: str
    profiles: ProfileStore | None
    builder: PromptBuilder

    @classmethod
    def load(cls, config: UserAdapterConfig, split: LampSplit | None = None) -> Workspace:
        split = split or load_task_split(config.data_dir, config.task, config.split)
        task = split.task
        model, tokenizer = load_base(BaseModelConfig(config.base_dir, dtype="float32",
                                                     load_in_4bit=config.load_in_4bit))
        profiles = ProfileStore(config.profiles_dir, task) if config.profile else None
        return cls(config, split, model, tokenizer, model_fingerprint(model), profiles,
                   PromptBuilder(task, tokenizer, config.max_prompt_length))

    def plan(self, user_id: str) -> UserJob | None:
        """:func:`trainers.user.plan_job` for ``user_id`` (``None``: nothing to train), once a replacement of its
        folder that a crash interrupted is finished (call it while holding the user's claim)."""
        profile = self.profiles.get(user_id) if self.profiles else None
        folder = self.config.adapter_folder(user_id)
        recover_dir(folder)
        return plan_job(self.config, self.builder, self.fingerprint, user_id, self.split.user_history(user_id),
                        folder, profile)

    def claims(self) -> UserClaims:
        """Claims on users of this workspace's adapters folder."""
        return UserClaims(self.config.adapters_dir())


class Executor(Protocol):
    """Trains ``users`` of ``config`` (``split`` holds their histories) and calls ``emit`` once per user."""

    def run(self, config: UserAdapterConfig, split: LampSplit, users: Sequence[str], emit: Emit) -> None: ...


class LocalExecutor:
    """An executor on this process: the base loaded once for all its users (every core for torch)."""

    def run(self, config: UserAdapterConfig, split: LampSplit, users: Sequence[str], emit: Emit) -> None:
        set_threads()
        self.train(Workspace.load(config, split), users, emit)

    def train(self, workspace: Workspace, users: Sequence[str], emit: Emit) -> None:
        raise NotImplementedError


class SequentialExecutor(LocalExecutor):
    """One user after another, each with :func:`trainers.user.train_job` (``UserAdapterTrainer``)."""

    def train(self, workspace: Workspace, users: Sequence[str], emit: Emit) -> None:
        claims = workspace.claims()
        for user_id in users:
            start = time.perf_counter()
            try:
                outcome = self._train_claimed(workspace, user_id) if claims.take(user_id) else Outcome(
                    user_id, "skipped", note=BUSY)
            except Exception as e:  # one user's failure must not stop the others
                outcome = Outcome.failed(user_id, e)
            finally:
                claims.release(user_id)
            outcome.seconds = round(time.perf_counter() - start, 2)
            emit(outcome)

    @staticmethod
    def _train_claimed(workspace: Workspace, user_id: str) -> Outcome:
        job = workspace.plan(user_id)
        steps = train_job(workspace.config, workspace.model, workspace.tokenizer, job) if job else 0
        return Outcome(user_id, job.outcome if job else "skipped", steps=steps)


@dataclass
class ConcurrentExecutor(LocalExecutor):
    """LoRA users trained together, up to ``slots`` at a time (:class:`trainers.concurrent.ConcurrentLoraTrainer`;
    fewer when fewer users or less memory); updates continue their saved adapters in a slot."""

    slots: int = MAX_AUTO_SLOTS

    def train(self, workspace: Workspace, users: Sequence[str], emit: Emit) -> None:
        outcomes: dict[str, str] = {}

        def jobs(claims: UserClaims) -> Iterator[UserJob]:
            for user_id in users:
                start = time.perf_counter()
                try:
                    claimed = claims.take(user_id)
                    job = workspace.plan(user_id) if claimed else None
                except Exception as e:  # noqa: BLE001 - recorded as this user's failure
                    claims.release(user_id)
                    emit(Outcome.failed(user_id, e, time.perf_counter() - start))
                    continue
                if job is None:
                    claims.release(user_id)
                    emit(Outcome(user_id, "skipped", round(time.perf_counter() - start, 2),
                                 note=None if claimed else BUSY))
                    continue
                outcomes[user_id] = job.outcome
                yield job

        def on_result(result: UserResult) -> None:
            claims.release(result.user_id)  # its adapter is saved (or it failed)
            if result.error is not None:
                emit(Outcome.failed(result.user_id, result.error, result.seconds))
            else:
                emit(Outcome(result.user_id, outcomes[result.user_id], round(result.seconds, 2), result.steps))

        config = workspace.config
        slots = min(self.slots, len(users))
        with workspace.claims() as claims:
            ConcurrentLoraTrainer(config, config.peft_config(), workspace.model, workspace.tokenizer, slots).run(
                jobs(claims), on_result)


def local_executor(config: UserAdapterConfig) -> LocalExecutor:
    """The executor ``config.concurrent`` asks for: users of a PEFT type that trains concurrently (LoRA;
    :data:`~trainers.peft_types.PEFT_TYPES`) together (0: as many as fit, at most :func:`~trainers.common.auto_slots`;
    N: N at a time), one by one for ``1`` and for other PEFT types."""
    method = PEFT_TYPES.get(config.peft_type)  # an unknown type fails each user (PeftOptions.peft_config)
    if method is not None and method.concurrent and config.concurrent != 1:
        return ConcurrentExecutor(config.concurrent or auto_slots())
    return SequentialExecutor()


# ---------------------------------------------------------------------------------------------- the driver


def check_config(config: UserAdapterConfig) -> None:
    """What a multi-user run refuses before it loads anything: hyperparameters no trainer can run, a base
    task-adapted for another task or prompt variant, and pushes that could not name the users (hashed ids without
    a salt)."""
    check_training(config)
    if config.concurrent < 0:
        raise ValueError(f"concurrent must be 0 (auto), 1 (one by one) or more, not {config.concurrent}")
    check_base_record(config.base_dir, config.task, k=config.k, profile=config.profile)
    if config.push_to_hub:
        open_store(config.hub_store).check_naming()


def train_users(config: UserAdapterConfig, on_done: Callable[[str, Path], None] | None = None,
                executor: Executor | None = None) -> UserRunReport:
    """Train the adapters of many users with ``executor`` (default :func:`local_executor`): a progress bar with
    ETA; finished users are skipped; an interrupted user resumes from its last epoch checkpoint; a failing user is
    recorded in ``run.json`` and does not stop the others. ``on_done(user, folder)`` runs after each new or
    updated adapter (default: the push of ``push_to_hub``). A base task-adapted for another task or prompt
    variant (its ``oppu_base.json``) is refused before anything runs. Another run on the same folder may run at
    the same time: users it is training are skipped (:data:`BUSY`), ``run.json`` holds both runs' users."""
    check_config(config)
    split = load_task_split(config.data_dir, config.task, config.split)
    users = split.select_users(config.users, config.max_users)
    if on_done is None and config.push_to_hub:
        on_done = _pusher(config.hub_store)
    out = private_dir(config.adapters_dir())
    with folder_in_use(out) as clean_up:
        clean_up()
        report = UserRunReport()
        todo = []
        for user_id in users:
            if not config.update and is_complete(config.adapter_folder(user_id), user_id=user_id, task=config.task):
                report.add(Outcome(user_id, "skipped"))
            else:
                todo.append(user_id)
        record_run(out, [Outcome(u, "skipped") for u in report.skipped], users)
        bar = tqdm(total=len(users), initial=len(users) - len(todo), unit="user",
                   desc=f"train-users {config.task} {config.variant}-{config.peft_type.lower()}")

        def emit(outcome: Outcome) -> None:
            if outcome.outcome in ("trained", "updated") and on_done is not None:
                try:
                    on_done(outcome.user_id, config.adapter_folder(outcome.user_id))
                except Exception as e:  # a failed push fails the user; the others go on
                    outcome = Outcome.failed(outcome.user_id, e, outcome.seconds)
            if outcome.error:
                logger.warning("user %s failed: %s", outcome.user_id, outcome.error)
            report.add(outcome)
            record_run(out, [outcome], users)
            bar.set_postfix_str(outcome.user_id[:24])
            bar.update(1)

        datasets.disable_progress_bars()
        try:
            if todo:
                (executor or local_executor(config)).run(config, split, todo, emit)
        finally:
            bar.close()
            datasets.enable_progress_bars()
        clean_up()  # temporary folders of workers that died mid-save (their users were redone)
    report.sort(users)
    return report


def _pusher(spec: str | None) -> Callable[[str, Path], None]:
    store = open_store(spec)
    return lambda user_id, folder: push_adapter(folder, store)
