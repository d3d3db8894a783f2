"""One PEFT per user (the paper's second stage): each user's adapter trained on that user's history, on top
of the task-adapted base, over many users with skip/resume/update semantics."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset
from peft import PeftModel, get_peft_model
from tqdm.auto import tqdm
from transformers import PrinterCallback, TrainerCallback, set_seed
from trl import SFTTrainer

from oppu_hub.adapters import AdapterRecord, check_base, check_setting, is_complete
from oppu_hub.data import LampSplit, load_task_split
from oppu_hub.io import atomic_dir, owner_only, private_dir, remove_stale_temps, safe_name, write_json
from oppu_hub.models import BaseModelConfig, load_base, model_fingerprint
from oppu_hub.profiles import ProfileStore
from oppu_hub.prompts import PromptBuilder, history_examples
from oppu_hub.tasks import get_task

from .base import check_base_record
from .common import PeftOptions, TrainingConfig, final_loss, last_checkpoint, set_threads, sft_config

logger = logging.getLogger(__name__)


@dataclass
class UserAdapterConfig(TrainingConfig, PeftOptions):
    """Per-user adapter training (``oppu-hub train-users``).

    Args:
        base_dir: the task-adapted base (``oppu-hub train-base`` output) the adapters sit on.
        split: whose users: ``test`` (default, as the paper), ``dev`` (for tuning) or ``train``.
        users: train only these user ids (default: every user of the split).
        max_users: train only the first N users of the split.
        output_dir: adapters go to ``{output_dir}/{task}/{variant}-{peft}/{user}`` (owner-only: 0700 folders,
            0600 files; so are the ``.{user}.work`` checkpoint folders, which hold the user's data order).
        update: continue an existing adapter on the history items it was not trained on yet, on the same base and
            with the same k / profile / history format (anything else is refused).
        push_to_hub: push each finished adapter to ``hub_store`` (one private repo per user and task).
        hub_store: where to push: ``hub:NAMESPACE``, a local store folder, or ``None`` for ``$OPPU_HUB_STORE``
            (else the local default store).
        max_history: train on at most the N most recent history items of a user.
        history_format: ``full`` items, or only their ``input`` / ``output`` side (the paper's Table 4 ablation).
        concurrent: train up to N users' LoRA adapters together in the same batches over the shared base
            (:mod:`trainers.concurrent`); 1 trains users one after another with ``UserAdapterTrainer``.
    """

    base_dir: str = field(default="runs/base/LaMP-2N/k0", metadata={"help": "task-adapted base folder"})
    split: str = field(default="test", metadata={"help": "users of this split: test | dev | train"})
    users: list[str] | None = field(default=None, metadata={"help": "only these user ids"})
    max_users: int | None = field(default=None, metadata={"help": "only the first N users"})
    output_dir: str = field(default="runs/users", metadata={"help": "root folder of user adapters"})
    update: bool = field(default=False, metadata={"help": "continue adapters on history items not trained on yet"})
    push_to_hub: bool = field(default=False, metadata={"help": "push each finished adapter to --hub_store"})
    hub_store: str | None = field(default=None, metadata={"help": "hub:NAMESPACE or a local store folder"})
    max_history: int | None = field(default=None, metadata={"help": "most recent N history items per user"})
    history_format: str = field(default="full", metadata={"help": "full | input | output (pair tasks' items)"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "batch size"})
    concurrent: int = field(default=1, metadata={"help": "train N users' LoRA adapters together (1: one by one)"})

    def adapters_dir(self) -> Path:
        suffix = "" if self.history_format == "full" else f"-{self.history_format}"
        return Path(self.output_dir) / get_task(self.task).name / f"{self.variant}-{self.peft_type.lower()}{suffix}"


class UserAdapterTrainer(SFTTrainer):
    """``SFTTrainer`` for one user's adapter; saves a standard PEFT folder plus ``oppu.json`` atomically.
    Per-step log printing is off: a multi-user run shows one progress bar over users instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remove_callback(PrinterCallback)
        self.add_callback(OwnerOnlyCheckpoints())

    def save_adapter(self, folder: str | Path, record: AdapterRecord, *, overwrite: bool = False) -> Path:
        with atomic_dir(folder, overwrite=overwrite, mode=0o700) as tmp:
            self.model.save_pretrained(tmp)
            record.save(tmp)
        return Path(folder)


class OwnerOnlyCheckpoints(TrainerCallback):
    """Makes each saved checkpoint owner-only: it holds optimizer state and the user's data order."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        owner_only(args.output_dir)


@dataclass
class UserRunReport:
    """What a ``train_users`` run did, per user."""

    trained: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def newer_items(history: Sequence[Mapping[str, Any]], record: AdapterRecord) -> list[dict[str, Any]]:
    """History items an adapter was not trained on yet: those missing from its ``trained_item_ids`` (so new items
    sharing the last item's date count too). A record from before that list: the items after its last item in
    the (time-ordered) history, else those dated after it."""
    items = [dict(i) for i in history]
    if record.trained_item_ids:
        seen = set(record.trained_item_ids)
        return [i for i in items if str(i["id"]) not in seen]
    ids = [str(i["id"]) for i in items]
    if record.last_item_id in ids:
        return items[ids.index(record.last_item_id) + 1:]
    if record.last_item_date:
        return [i for i in items if str(i.get("date", "")) > record.last_item_date]
    return []


def user_dataset(config: UserAdapterConfig, builder: PromptBuilder, history: Sequence[Mapping[str, Any]],
                 profile: str | None) -> Dataset:
    """A user's training rows: prompt/completion pairs, or plain text for next-token pretraining."""
    rows = history_examples(builder, history, config.k, profile, config.history_format)
    if not rows:
        raise ValueError("the user has no history to train on")
    return Dataset.from_list(rows)


def train_user(config: UserAdapterConfig, model: Any, tokenizer: Any, base_fingerprint: str, user_id: str,
               history: Sequence[Mapping[str, Any]], folder: Path, profile: str | None = None) -> str:
    """Train (or, with ``update``, continue) one user's adapter into ``folder``; returns what was done.

    ``model`` is the shared base; it is left exactly as it came (adapters are unloaded afterwards). An update
    refuses an adapter trained on another base or with another k / profile / history format.
    """
    history = list(history)[-config.max_history:] if config.max_history else list(history)
    record = AdapterRecord.from_folder(folder) if is_complete(folder) else None
    if record is not None and not config.update:
        return "skipped"
    if record is not None:
        check_base(record, base_fingerprint, where=str(folder))
        check_setting(record, k=config.k, profile=config.profile, history_format=config.history_format,
                      where=str(folder), hint="or train a new adapter into another --output_dir")
    items = newer_items(history, record) if record is not None else history
    if not items:
        return "skipped"
    new_ids = [str(i["id"]) for i in items]
    fresh = set(new_ids)
    trained_ids: list[str] = []
    if record is not None:  # a record from before trained_item_ids: every other history item was trained on
        trained_ids = record.trained_item_ids or [str(i["id"]) for i in history if str(i["id"]) not in fresh]
    builder = PromptBuilder(get_task(config.task), tokenizer, config.max_prompt_length)
    # Retrieval inside a training prompt sees the whole (time-ordered) history before each item.
    rows = user_dataset(config, builder, history, profile)
    dataset = rows.select([n for n, item in enumerate(history) if str(item["id"]) in fresh])
    set_seed(config.seed)
    if record is not None:
        peft_model = PeftModel.from_pretrained(model, folder, is_trainable=True)
    else:
        peft_model = get_peft_model(model, config.peft_config())
    work_dir = private_dir(folder.parent / f".{folder.name}.work")
    try:
        trainer = UserAdapterTrainer(
            model=peft_model, args=sft_config(config, work_dir, len(dataset), disable_tqdm=True, logging_steps=1),
            train_dataset=dataset, processing_class=tokenizer)
        trainer.train(resume_from_checkpoint=last_checkpoint(work_dir))
        last = items[-1]
        new_record = AdapterRecord(
            user_id=user_id, task=get_task(config.task).name, base_model=config.base_dir,
            base_fingerprint=base_fingerprint, peft_type=config.peft_type, k=config.k, profile=config.profile,
            history_format=config.history_format,
            num_history_items=len(items) + (record.num_history_items if record else 0),
            last_item_id=str(last["id"]), last_item_date=str(last["date"]) if last.get("date") else None,
            trained_item_ids=[*trained_ids, *new_ids], train_loss=final_loss(trainer.state.log_history),
            training={k: v for k, v in dataclasses.asdict(config).items()
                      if k not in ("users", "push_to_hub", "hub_store")},
        )
        trainer.save_adapter(folder, new_record, overwrite=record is not None)
    finally:
        _unload(peft_model)
    shutil.rmtree(work_dir, ignore_errors=True)
    return "updated" if record is not None else "trained"


def train_users(config: UserAdapterConfig, on_done: Callable[[str, Path], None] | None = None
                ) -> UserRunReport:
    """Train the adapters of many users on one base loaded once: a progress bar with ETA; finished users
    are skipped; an interrupted user resumes from its last epoch checkpoint; a failing user is recorded in
    ``run.json`` and does not stop the others. ``on_done(user, folder)`` runs after each new adapter. A base
    task-adapted for another task or prompt variant (its ``oppu_base.json``) is refused before anything runs."""
    set_threads()
    task = get_task(config.task)
    check_config(config)
    split = load_task_split(config.data_dir, task, config.split)
    users = split.select_users(config.users, config.max_users)
    if on_done is None and config.push_to_hub:
        on_done = _pusher(config.hub_store)
    model, tokenizer = load_base(BaseModelConfig(config.base_dir, dtype="float32"))
    fingerprint = model_fingerprint(model)
    profiles = ProfileStore(config.profiles_dir, task) if config.profile else None
    out = private_dir(config.adapters_dir())
    remove_stale_temps(out)
    report = UserRunReport()
    datasets.disable_progress_bars()
    bar = tqdm(users, desc=f"train-users {task.name} {config.variant}-{config.peft_type.lower()}", unit="user")
    if config.concurrent > 1 and config.peft_type == "LORA":  # several users per batch (trainers/concurrent.py)
        from .concurrent import train_users_concurrent

        train_users_concurrent(config, model, tokenizer, fingerprint, split, users, profiles, out, report, on_done, bar)
        bar.close()
        datasets.enable_progress_bars()
        return report
    for user_id in bar:
        bar.set_postfix_str(user_id[:24])
        start = time.perf_counter()
        try:
            getattr(report, run_user(config, model, tokenizer, fingerprint, split, profiles, out, user_id,
                                     on_done)).append(user_id)
        except Exception as e:  # one user's failure must not stop the others
            logger.warning("user %s failed: %s", user_id, e)
            report.failed[user_id] = f"{type(e).__name__}: {e}"
        report.seconds[user_id] = round(time.perf_counter() - start, 2)
        write_json(out / "run.json", dataclasses.asdict(report))
    datasets.enable_progress_bars()
    return report


def check_config(config: UserAdapterConfig) -> None:
    """What a multi-user run refuses before it loads anything: a base task-adapted for another task or prompt
    variant, and pushes that could not name the users (hashed ids without a salt)."""
    check_base_record(config.base_dir, config.task, k=config.k, profile=config.profile)
    if config.push_to_hub:
        from oppu_hub.store import open_store

        open_store(config.hub_store).check_naming()


def run_user(config: UserAdapterConfig, model: Any, tokenizer: Any, fingerprint: str, split: LampSplit,
             profiles: ProfileStore | None, out: Path, user_id: str,
             on_done: Callable[[str, Path], None] | None) -> str:
    """One user of a multi-user run: their profile and history, :func:`train_user`, then ``on_done`` for a new
    or updated adapter. Returns ``trained``, ``updated`` or ``skipped``; errors propagate to the caller."""
    folder = out / safe_name(user_id)
    profile = profiles.get(user_id) if profiles else None
    outcome = train_user(config, model, tokenizer, fingerprint, user_id, split.user_history(user_id), folder, profile)
    if outcome != "skipped" and on_done is not None:
        on_done(user_id, folder)
    return outcome


def _unload(peft_model: Any) -> None:
    """Remove injected adapter layers so the shared base is clean for the next user."""
    if hasattr(peft_model.base_model, "unload") and not peft_model.peft_config["default"].is_prompt_learning:
        peft_model.base_model.unload()


def _pusher(spec: str | None) -> Callable[[str, Path], None]:
    from oppu_hub.store import open_store, push_adapter

    store = open_store(spec)
    return lambda user_id, folder: push_adapter(folder, store)
