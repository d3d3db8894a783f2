"""The run over many users behind ``train-users``: one driver that owns the loop and its records, and
interchangeable executors that do the training.

The driver (:func:`train_users`) refuses what cannot run (:func:`check_config`), selects the users, skips those
whose adapter is complete (not with ``--update``), hands the others to an executor and records what each came to --
``trained``, ``updated``, ``skipped`` or ``failed`` (with the error), seconds and optimizer steps -- in a
:class:`UserRunReport` and ``run.json`` (rewritten after every user), under one progress bar. ``on_done`` (by
default the push to ``--hub_store``) runs for every new or updated adapter; its failure is that user's failure.

An :class:`Executor` trains a list of users and reports an :class:`Outcome` for each: :class:`SequentialExecutor`
(``UserAdapterTrainer``, one user after another), :class:`ConcurrentExecutor` (users in the slots of
:mod:`trainers.concurrent`), and the Ray actor pool (:class:`oppu_hub.distributed.RayExecutor`, whose actors run
the local executor the config asks for). Every executor plans users with :func:`trainers.user.plan_job` on a
:class:`Workspace`, so what is skipped, resumed or updated, what is refused and the adapter record are the same
whichever trains; both local executors resume an interrupted user from its epoch checkpoint in ``.{user}.work``.
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

from oppu_hub.adapters import is_complete
from oppu_hub.data import LampSplit, load_task_split
from oppu_hub.io import private_dir, remove_stale_temps, safe_name, write_json
from oppu_hub.models import BaseModelConfig, load_base, model_fingerprint
from oppu_hub.profiles import ProfileStore
from oppu_hub.prompts import PromptBuilder

from .base import check_base_record
from .common import MAX_AUTO_SLOTS, auto_slots, check_training, set_threads
from .concurrent import ConcurrentLoraTrainer, UserResult
from .user import UserAdapterConfig, UserJob, plan_job, train_job

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one user's training came to: ``trained``, ``updated``, ``skipped`` or ``failed`` (then ``error``),
    its seconds and the optimizer steps it made (fewer than planned when it resumed from a checkpoint)."""

    user_id: str
    outcome: str
    seconds: float = 0.0
    steps: int = 0
    error: str | None = None

    @classmethod
    def failed(cls, user_id: str, error: BaseException, seconds: float = 0.0) -> Outcome:
        return cls(user_id, "failed", round(seconds, 2), error=f"{type(error).__name__}: {error}")


Emit = Callable[[Outcome], None]


@dataclass
class UserRunReport:
    """What a ``train_users`` run did, per user (``run.json``)."""

    trained: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        if outcome.outcome == "failed":
            self.failed[outcome.user_id] = str(outcome.error)
        else:
            getattr(self, outcome.outcome).append(outcome.user_id)
        self.seconds[outcome.user_id] = outcome.seconds
        if outcome.steps:
            self.steps[outcome.user_id] = outcome.steps

    def sort(self, users: Sequence[str]) -> None:
        """Put every entry in the order of ``users`` (executors report users as they finish)."""
        order = {u: n for n, u in enumerate(users)}
        for name in ("trained", "updated", "skipped"):
            getattr(self, name).sort(key=order.__getitem__)
        for name in ("failed", "seconds", "steps"):
            setattr(self, name, dict(sorted(getattr(self, name).items(), key=lambda kv: order[kv[0]])))


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
        model, tokenizer = load_base(BaseModelConfig(config.base_dir, dtype="float32"))
        profiles = ProfileStore(config.profiles_dir, task) if config.profile else None
        return cls(config, split, model, tokenizer, model_fingerprint(model), profiles,
                   PromptBuilder(task, tokenizer, config.max_prompt_length))

    def plan(self, user_id: str) -> UserJob | None:
        """:func:`trainers.user.plan_job` for ``user_id`` (``None``: nothing to train)."""
        profile = self.profiles.get(user_id) if self.profiles else None
        return plan_job(self.config, self.builder, self.fingerprint, user_id, self.split.user_history(user_id),
                        self.config.adapters_dir() / safe_name(user_id), profile)


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
        for user_id in users:
            start = time.perf_counter()
            try:
                job = workspace.plan(user_id)
                steps = train_job(workspace.config, workspace.model, workspace.tokenizer, job) if job else 0
                outcome = Outcome(user_id, job.outcome if job else "skipped", steps=steps)
            except Exception as e:  # one user's failure must not stop the others
                outcome = Outcome.failed(user_id, e)
            outcome.seconds = round(time.perf_counter() - start, 2)
            emit(outcome)


@dataclass
class ConcurrentExecutor(LocalExecutor):
    """LoRA users trained together, up to ``slots`` at a time (:class:`trainers.concurrent.ConcurrentLoraTrainer`;
    fewer when fewer users or less memory); updates continue their saved adapters in a slot."""

    slots: int = MAX_AUTO_SLOTS

    def train(self, workspace: Workspace, users: Sequence[str], emit: Emit) -> None:
        outcomes: dict[str, str] = {}

        def jobs() -> Iterator[UserJob]:
            for user_id in users:
                start = time.perf_counter()
                try:
                    job = workspace.plan(user_id)
                except Exception as e:  # noqa: BLE001 - recorded as this user's failure
                    emit(Outcome.failed(user_id, e, time.perf_counter() - start))
                    continue
                if job is None:
                    emit(Outcome(user_id, "skipped", round(time.perf_counter() - start, 2)))
                    continue
                outcomes[user_id] = job.outcome
                yield job

        def on_result(result: UserResult) -> None:
            if result.error is not None:
                emit(Outcome.failed(result.user_id, result.error, result.seconds))
            else:
                emit(Outcome(result.user_id, outcomes[result.user_id], round(result.seconds, 2), result.steps))

        config = workspace.config
        slots = min(self.slots, len(users))
        ConcurrentLoraTrainer(config, config.peft_config(), workspace.model, workspace.tokenizer, slots).run(
            jobs(), on_result)


def local_executor(config: UserAdapterConfig) -> LocalExecutor:
    """The executor ``config.concurrent`` asks for: LoRA users together (0: as many as fit, at most
    :func:`~trainers.common.auto_slots`; N: N at a time), one by one for ``1`` and for other PEFT types."""
    if config.peft_type == "LORA" and config.concurrent != 1:
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
        from oppu_hub.store import open_store

        open_store(config.hub_store).check_naming()


def train_users(config: UserAdapterConfig, on_done: Callable[[str, Path], None] | None = None,
                executor: Executor | None = None) -> UserRunReport:
    """Train the adapters of many users with ``executor`` (default :func:`local_executor`): a progress bar with
    ETA; finished users are skipped; an interrupted user resumes from its last epoch checkpoint; a failing user is
    recorded in ``run.json`` and does not stop the others. ``on_done(user, folder)`` runs after each new or
    updated adapter (default: the push of ``push_to_hub``). A base task-adapted for another task or prompt
    variant (its ``oppu_base.json``) is refused before anything runs."""
    check_config(config)
    split = load_task_split(config.data_dir, config.task, config.split)
    users = split.select_users(config.users, config.max_users)
    if on_done is None and config.push_to_hub:
        on_done = _pusher(config.hub_store)
    out = private_dir(config.adapters_dir())
    remove_stale_temps(out)
    report = UserRunReport()
    todo = []
    for user_id in users:
        if not config.update and is_complete(out / safe_name(user_id)):
            report.add(Outcome(user_id, "skipped"))
        else:
            todo.append(user_id)
    bar = tqdm(total=len(users), initial=len(users) - len(todo), unit="user",
               desc=f"train-users {config.task} {config.variant}-{config.peft_type.lower()}")

    def emit(outcome: Outcome) -> None:
        if outcome.outcome in ("trained", "updated") and on_done is not None:
            try:
                on_done(outcome.user_id, out / safe_name(outcome.user_id))
            except Exception as e:  # a failed push fails the user; the others go on
                outcome = Outcome.failed(outcome.user_id, e, outcome.seconds)
        if outcome.error:
            logger.warning("user %s failed: %s", outcome.user_id, outcome.error)
        report.add(outcome)
        write_json(out / "run.json", dataclasses.asdict(report))
        bar.set_postfix_str(outcome.user_id[:24])
        bar.update(1)

    datasets.disable_progress_bars()
    try:
        if todo:
            (executor or local_executor(config)).run(config, split, todo, emit)
    finally:
        bar.close()
        datasets.enable_progress_bars()
    report.sort(users)
    write_json(out / "run.json", dataclasses.asdict(report))
    remove_stale_temps(out)  # temporary folders of workers that died mid-save (their users were redone)
    return report


def _pusher(spec: str | None) -> Callable[[str, Path], None]:
    from oppu_hub.store import open_store, push_adapter

    store = open_store(spec)
    return lambda user_id, folder: push_adapter(folder, store)
