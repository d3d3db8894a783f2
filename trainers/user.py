"""One PEFT per user (the paper's second stage), one user at a time: what a user's training job is (its rows, its
adapter record, the adapter it continues), and the sequential executor's trainer, an ``SFTTrainer`` per user on top
of the task-adapted base. Its config is :class:`trainers.user_config.UserAdapterConfig`; the loop over many users
is :mod:`trainers.runs`."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from peft import PeftModel, get_peft_model
from transformers import PrinterCallback, TrainerCallback, set_seed
from trl import SFTTrainer

from oppu_hub.adapters import AdapterCorruptError, AdapterRecord, check_base, check_setting, verify_adapter
from oppu_hub.data import newest_items
from oppu_hub.io import atomic_dir, owner_only, private_dir
from oppu_hub.prompts import PromptBuilder, history_examples

from .common import last_checkpoint, sft_config, step_bar
from .user_config import UserAdapterConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- a user's job


@dataclass
class UserJob:
    """One user's training: the rows to train on (``history_examples`` output), where the adapter goes, the
    record it is saved with (``train_loss`` filled in at the end), for ``--update`` the adapter it continues, and
    whether the save replaces the folder (the adapter it continues, or one that did not verify). ``loss_weight``
    scales the user's loss (tests use 0 to freeze a user)."""

    user_id: str
    rows: list[dict[str, str]]
    folder: Path
    record: AdapterRecord
    init: Path | None = None
    loss_weight: float = 1.0
    overwrite: bool = False

    @property
    def work_dir(self) -> Path:
        """The owner-only folder of the user's checkpoints while it trains (removed once its adapter is saved)."""
        return self.folder.parent / f".{self.folder.name}.work"

    @property
    def outcome(self) -> str:
        return "updated" if self.init is not None else "trained"


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


def adapter_record(config: UserAdapterConfig, user_id: str, base_fingerprint: str,
                   history: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]],
                   previous: AdapterRecord | None) -> AdapterRecord:
    """The ``oppu.json`` record of an adapter trained on ``items`` of ``history`` (continuing ``previous`` on an
    update), without its ``train_loss`` yet. Every executor saves this record."""
    new_ids = [str(i["id"]) for i in items]
    trained_ids: list[str] = []
    if previous is not None:  # a record from before trained_item_ids: every other history item was trained on
        fresh = set(new_ids)
        trained_ids = previous.trained_item_ids or [str(i["id"]) for i in history if str(i["id"]) not in fresh]
    last = items[-1]
    return AdapterRecord(
        user_id=user_id, task=config.task, base_model=config.base_dir,
        base_fingerprint=base_fingerprint, peft_type=config.peft_type, k=config.k, profile=config.profile,
        history_format=config.history_format,
        num_history_items=len(items) + (previous.num_history_items if previous else 0),
        last_item_id=str(last["id"]), last_item_date=str(last["date"]) if last.get("date") else None,
        trained_item_ids=[*trained_ids, *new_ids],
        training={k: v for k, v in dataclasses.asdict(config).items()
                  if k not in ("users", "push_to_hub", "hub_store")},
    )


def finished_adapter(folder: Path, user_id: str, task: str) -> AdapterRecord | None:
    """The record of ``user_id``'s finished adapter in ``folder``; ``None`` when there is none, or when the folder
    does not verify (a warning says so: the next save replaces it). The adapter of another user or task there is
    refused (:class:`~oppu_hub.adapters.AdapterMismatchError`)."""
    if not folder.exists():
        return None
    try:
        return verify_adapter(folder, user_id=user_id, task=task)
    except AdapterCorruptError as e:
        logger.warning("%s; training user %r anew, the new adapter replaces it", e, user_id)
        return None


def plan_job(config: UserAdapterConfig, builder: PromptBuilder, base_fingerprint: str, user_id: str,
             history: Sequence[Mapping[str, Any]], folder: Path, profile: str | None = None) -> UserJob | None:
    """What training ``user_id`` into ``folder`` takes; ``None`` when there is nothing to do (a finished adapter,
    or with ``update`` one already trained on every history item). An update refuses an adapter trained on
    another base or with another k / profile / history format; a folder that does not verify is replaced."""
    history = newest_items(history, config.max_history)
    previous = finished_adapter(folder, user_id, config.task)
    if previous is not None and not config.update:
        return None
    if previous is not None:
        check_base(previous, base_fingerprint, where=str(folder))
        check_setting(previous, k=config.k, profile=config.profile, history_format=config.history_format,
                      where=str(folder), hint="or train a new adapter into another --output_dir")
    items = newer_items(history, previous) if previous is not None else history
    if not items:
        return None
    # Retrieval inside a training prompt sees the whole (time-ordered) history before each item.
    rows = history_examples(builder, history, config.k, profile, config.history_format)
    if not rows:
        raise ValueError("the user has no history to train on")
    fresh = {str(i["id"]) for i in items}
    rows = [row for row, item in zip(rows, history, strict=True) if str(item["id"]) in fresh]
    record = adapter_record(config, user_id, base_fingerprint, history, items, previous)
    return UserJob(user_id, rows, folder, record, init=folder if previous is not None else None,
                   overwrite=folder.exists())


# ---------------------------------------------------------------------------------------------- the SFTTrainer


class UserAdapterTrainer(SFTTrainer):
    """``SFTTrainer`` for one user's adapter; saves a standard PEFT folder plus ``oppu.json`` atomically.
    Per-step log printing is off: a multi-user run shows its bar over users and (:func:`train_job`) this user's
    :class:`StepBar`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remove_callback(PrinterCallback)
        self.add_callback(OwnerOnlyCheckpoints())

    def save_adapter(self, folder: str | Path, record: AdapterRecord, *, overwrite: bool = False) -> Path:
        with atomic_dir(folder, overwrite=overwrite, mode=0o700) as tmp:
            self.model.save_pretrained(tmp)
            record.save(tmp)  # after the weights: it records their sha256
        return Path(folder)


class OwnerOnlyCheckpoints(TrainerCallback):
    """Makes each saved checkpoint owner-only: it holds optimizer state and the user's data order."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        owner_only(args.output_dir)


class StepBar(TrainerCallback):
    """This user's optimizer steps on :func:`trainers.common.step_bar`. A resumed run's bar jumps to its checkpoint
    at the first step (the Trainer loads the checkpoint's state after ``on_train_begin``)."""

    def __init__(self) -> None:
        self.bar = step_bar()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.total = state.max_steps
        self.bar.refresh()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.update(state.global_step - self.bar.done)

    def close(self) -> None:
        self.bar.close()


def train_job(config: UserAdapterConfig, model: Any, tokenizer: Any, job: UserJob) -> int:
    """Train ``job`` with :class:`UserAdapterTrainer` (resuming from its last epoch checkpoint) and save its
    adapter; returns the optimizer steps this call made. ``model`` is the shared base; it is left exactly as it
    came (adapters are unloaded afterwards)."""
    dataset = Dataset.from_list(job.rows)
    set_seed(config.seed)
    if job.init is not None:
        peft_model = PeftModel.from_pretrained(model, job.init, is_trainable=True)
    else:
        peft_model = get_peft_model(model, config.peft_config())
    work_dir = private_dir(job.work_dir)
    steps = StepBar()
    try:
        trainer = UserAdapterTrainer(
            model=peft_model, args=sft_config(config, work_dir, len(dataset), disable_tqdm=True, logging_steps=1),
            train_dataset=dataset, processing_class=tokenizer, callbacks=[steps])
        checkpoint = last_checkpoint(work_dir)
        trainer.train(resume_from_checkpoint=checkpoint)
        # The mean of every step's loss (logged each step; a resumed run's log starts with the checkpoint's):
        # the Trainer's own train_loss only averages the steps since the resume.
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        record = dataclasses.replace(job.record, train_loss=sum(losses) / len(losses) if losses else None)
        trainer.save_adapter(job.folder, record, overwrite=job.overwrite)
        resumed_at = int(Path(checkpoint).name.rpartition("-")[2]) if checkpoint else 0
    finally:
        steps.close()
        _unload(peft_model)
    shutil.rmtree(work_dir, ignore_errors=True)
    return trainer.state.global_step - resumed_at


def _unload(peft_model: Any) -> None:
    """Remove injected adapter layers so the shared base is clean for the next user."""
    if hasattr(peft_model.base_model, "unload") and not peft_model.peft_config["default"].is_prompt_learning:
        peft_model.base_model.unload()
