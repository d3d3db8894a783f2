"""Stage A of two-stage personalization ("collective then personal"): a LoRA trained on many users' history items
on top of the task-adapted base and merged into a new base folder, on which stage B trains each evaluated user's
adapter (``train-users``, unchanged) as a personal residual. Its config is
:class:`trainers.collective_config.CollectiveConfig`.

The merged folder's ``oppu_base.json`` names both stages: ``task_adapted`` (the base it started from: folder,
fingerprint and that base's own record) and ``collective`` (whose histories, how many users, items and examples,
the items left out as evaluated queries, the data's hash, the loss, the training seconds (of the last run, when it
resumed) and the settings). Its ``task``, ``k`` and ``profile`` are
the task-adapted base's, so :func:`trainers.base.check_base_record` accepts it wherever it accepts that base, and
its ``base_model`` is that base's folder (model cards follow it down to the pretrained model)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import shutil
from pathlib import Path
from typing import Any

from datasets import Dataset

from oppu_hub.baselines import POOLED_USER, pooled_split
from oppu_hub.data import item_keys, load_task_split, newest_items, query_keys, split_files
from oppu_hub.io import remove_stale_temps
from oppu_hub.models import BaseModelConfig, load_base, model_fingerprint
from oppu_hub.prompts import PromptBuilder, history_examples
from oppu_hub.tasks import get_task

from .base import BASE_RECORD, BaseTaskTrainer, check_base_record, read_base_record
from .collective_config import CollectiveConfig
from .common import STEP_CHECKPOINTS, check_training, final_loss, last_checkpoint, set_threads, sft_config

logger = logging.getLogger(__name__)


def collective_histories(config: CollectiveConfig) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The history items stage A trains on, ``{user: items in time order}``, and how many items were left out as
    evaluated queries. ``train``: each training user's newest ``max_history`` items, minus any item that is a query
    of ``split``'s users; ``pooled``: the one user :data:`~oppu_hub.baselines.POOLED_USER` of
    :func:`~oppu_hub.baselines.pooled_split` (the pooled control's training data, ids ``{user}/{id}``)."""
    task = get_task(config.task)
    if config.users == "pooled":
        split = load_task_split(config.data_dir, task, str(config.split))
        users = split.select_users(config.user_ids, config.max_users)
        history = pooled_split(split, users, config.max_history).user_history(POOLED_USER)
        offered = sum(len(newest_items(split.user_history(u), config.max_history)) for u in users)
        return {POOLED_USER: history}, offered - len(history)
    train = load_task_split(config.data_dir, task, "train")
    queries = query_keys(task, load_task_split(config.data_dir, task, config.split).questions) if config.split \
        else set()
    histories, left_out = {}, 0
    for user in train.select_users(config.user_ids, config.max_users):
        items = newest_items(train.user_history(user), config.max_history)
        kept = [item for item in items if queries.isdisjoint(item_keys(task, item))]
        left_out += len(items) - len(kept)
        if kept:
            histories[user] = kept
    return histories, left_out


def collective_examples(config: CollectiveConfig, builder: PromptBuilder,
                        histories: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, str]]]:
    """``(item id, training row)`` for every item of ``histories``, each user's rows built as their adapter's
    (:func:`oppu_hub.prompts.history_examples`: a prompt retrieves from that user's earlier items), then a seeded
    sample of ``max_examples``. Item ids are ``{user}/{id}`` (the pooled user's already are)."""
    examples = []
    for user, items in histories.items():
        rows = history_examples(builder, items, config.k, None, config.history_format)
        prefix = "" if user == POOLED_USER else f"{user}/"
        examples += [(f"{prefix}{item['id']}", row) for item, row in zip(items, rows, strict=True)]
    if config.max_examples and len(examples) > config.max_examples:
        examples = random.Random(config.seed).sample(examples, config.max_examples)
    return examples


def train_collective(config: CollectiveConfig) -> Path:
    """Train (or reuse) the collective base of ``config`` and return its folder: a LoRA on
    :func:`collective_examples` over ``config.base_dir``, merged and saved with an ``oppu_base.json`` naming both
    stages. A ``base_dir`` task-adapted for another task or k is refused."""
    target = config.target_dir()
    if (target / BASE_RECORD).exists() and not config.overwrite:
        logger.info("collective base %s exists; reusing it (overwrite=True retrains)", target)
        return target
    check_training(config)
    check_base_record(config.base_dir, config.task, k=config.k, profile=False)
    set_threads()
    task = get_task(config.task)
    model, tokenizer = load_base(BaseModelConfig(config.base_dir, dtype="float32"))
    fingerprint = model_fingerprint(model)
    histories, left_out = collective_histories(config)
    examples = collective_examples(config, PromptBuilder(task, tokenizer, config.max_prompt_length), histories)
    if not examples:
        raise ValueError(f"no history items to train the collective stage of {task.name} on ({config.users} users "
                         f"of {config.data_dir})")
    remove_stale_temps(target.parent)
    work_dir = target.parent / f".{target.name}.work"
    rows = [row for _, row in examples]
    trainer = BaseTaskTrainer(
        model=model, args=sft_config(config, work_dir, len(rows), **STEP_CHECKPOINTS),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=config.peft_config())
    output = trainer.train(resume_from_checkpoint=last_checkpoint(work_dir))
    ids = sorted(item_id for item_id, _ in examples)
    splits = ["train"] if config.users == "train" else []
    splits += [config.split] if config.split else []
    record = {
        "task": task.name, "variant": config.variant, "k": config.k, "profile": False, "stage": "collective",
        "base_model": config.base_dir, "base_fingerprint": fingerprint,
        "task_adapted": {"dir": config.base_dir, "fingerprint": fingerprint,
                         "record": read_base_record(config.base_dir)},
        "collective": {
            "users": config.users, "split": config.split,
            "data": {s: _files_hash(split_files(config.data_dir, task, s)) for s in splits},
            "num_users": len(histories), "num_items": sum(len(h) for h in histories.values()),
            "left_out_queries": left_out, "num_examples": len(rows),
            "items": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
            "train_loss": final_loss(trainer.state.log_history),
            "train_seconds": round(output.metrics["train_runtime"], 1), "config": dataclasses.asdict(config)},
    }
    trainer.save_merged(target, record, overwrite=config.overwrite)
    shutil.rmtree(work_dir, ignore_errors=True)
    return target


def _files_hash(paths: tuple[Path, ...]) -> str:
    h = hashlib.sha256()
    for path in paths:
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


__all__ = ["collective_examples", "collective_histories", "train_collective"]
