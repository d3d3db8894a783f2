"""Task adaptation of the shared base (the paper's first stage): a LoRA trained on the task over the training
users, merged into the base and saved as a normal model folder with ``oppu_base.json``. Its config is
:class:`trainers.base_config.BaseTaskConfig`."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import shutil
from pathlib import Path
from typing import Any

from datasets import Dataset
from trl import SFTTrainer

from oppu_hub.data import LampSplit, load_task_split
from oppu_hub.io import atomic_dir, read_json, remove_stale_temps, write_json
from oppu_hub.models import BaseModelConfig, load_base, model_fingerprint
from oppu_hub.profiles import ProfileStore
from oppu_hub.prompts import PromptBuilder, completion, history_examples, query_prompt
from oppu_hub.tasks import get_task

from .base_config import BaseTaskConfig
from .common import STEP_CHECKPOINTS, final_loss, last_checkpoint, set_threads, sft_config

logger = logging.getLogger(__name__)

BASE_RECORD = "oppu_base.json"


class BaseTaskTrainer(SFTTrainer):
    """``SFTTrainer`` that, after training, merges its LoRA into the base and saves a plain model folder."""

    def save_merged(self, folder: str | Path, record: dict[str, Any], *, overwrite: bool = False) -> Path:
        """Merge the trained adapter into the base and write model, tokenizer and ``oppu_base.json``
        atomically to ``folder``."""
        merged = self.model.merge_and_unload()
        record = {**record, "fingerprint": model_fingerprint(merged)}
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            merged.save_pretrained(tmp)
            self.processing_class.save_pretrained(tmp)
            write_json(tmp / BASE_RECORD, record)
        return Path(folder)


def base_examples(config: BaseTaskConfig, split: LampSplit, builder: PromptBuilder,
                  profiles: ProfileStore | None = None) -> list[dict[str, str]]:
    """Training rows for task adaptation: each training query (with its top-k history and profile) and,
    with ``include_history``, each training user's history items as in user training."""
    task = split.task
    rows = []
    for user in split.user_ids:
        profile = profiles.get(user) if profiles else None
        for q in split.user_questions(user):
            rows.append({"prompt": query_prompt(builder, q, q.profile, config.k, profile),
                         "completion": completion(q.gold or "")})
        if config.include_history and task.has_pairs:
            rows.extend(history_examples(builder, split.user_history(user), config.k, profile))
    if config.max_examples is not None and len(rows) > config.max_examples:
        rows = random.Random(config.seed).sample(rows, config.max_examples)
    return rows


def train_base(config: BaseTaskConfig) -> Path:
    """Train (or reuse) the task-adapted base for ``config``; returns its folder."""
    target = config.target_dir()
    if (target / BASE_RECORD).exists() and not config.overwrite:
        logger.info("task-adapted base %s exists; reusing it (overwrite=True retrains)", target)
        return target
    set_threads()
    split = load_task_split(config.data_dir, config.task, "train")
    task = split.task
    if not split.has_golds:
        raise ValueError(f"{split.source}: training questions need gold outputs")
    model, tokenizer = load_base(BaseModelConfig(config.base_model, dtype="float32"))
    builder = PromptBuilder(task, tokenizer, config.max_prompt_length)
    profiles = ProfileStore(config.profiles_dir, task) if config.profile else None
    rows = base_examples(config, split, builder, profiles)
    if not rows:
        raise ValueError(f"no training examples for {task.name} in {config.data_dir}")
    remove_stale_temps(target.parent)
    work_dir = target.parent / f".{target.name}.work"
    trainer = BaseTaskTrainer(
        model=model, args=sft_config(config, work_dir, len(rows), **STEP_CHECKPOINTS),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=config.peft_config())
    trainer.train(resume_from_checkpoint=last_checkpoint(work_dir))
    record = {
        "task": task.name, "variant": config.variant, "k": config.k, "profile": config.profile,
        "base_model": config.base_model, "base_fingerprint": model_fingerprint(model),
        "data": _data_hash(Path(config.data_dir) / task.name), "num_examples": len(rows),
        "train_loss": final_loss(trainer.state.log_history), "config": dataclasses.asdict(config),
    }
    trainer.save_merged(target, record, overwrite=config.overwrite)
    shutil.rmtree(work_dir, ignore_errors=True)
    return target


def read_base_record(folder: str | Path) -> dict[str, Any]:
    """The ``oppu_base.json`` of a task-adapted base (empty for a plain pretrained base)."""
    path = Path(folder) / BASE_RECORD
    return read_json(path) if path.exists() else {}


def check_base_record(folder: str | Path, task: str, *, k: int, profile: bool) -> None:
    """Refuse a base task-adapted (``oppu_base.json``) for another task, or for prompts with another k / profile
    setting, than the adapters about to be trained on it; a plain pretrained base (no record) passes."""
    record = read_base_record(folder)
    if not record:
        return
    want = {"task": get_task(task).name, "k": k, "profile": profile}
    have = {key: record.get(key) for key in want}
    if have != want:
        diff = ", ".join(f"{key} {have[key]!r} (requested {want[key]!r})" for key in want if have[key] != want[key])
        variant = f"k{k}" + ("-profile" if profile else "")
        raise ValueError(f"{Path(folder) / BASE_RECORD}: this base was task-adapted with {diff}; train on the base "
                         f"of {want['task']} {variant} (oppu-hub train-base --task {want['task']} --k {k}"
                         f"{' --profile' if profile else ''}), or on a plain pretrained base")


def _data_hash(folder: Path) -> str:
    """Content hash of the task's training data (manifest when present, else the train files)."""
    files = [folder / "manifest.json"] if (folder / "manifest.json").exists() else sorted(folder.glob("train_*.json"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
