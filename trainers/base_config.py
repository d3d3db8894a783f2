"""The configuration of task adaptation of the base (``oppu-hub train-base``; :mod:`trainers.base` trains it).
Torch-free, as trl's ``*_config.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from oppu_hub.default_base import DEFAULT_BASE

from .training_config import PeftOptions, TrainingConfig


@dataclass
class BaseTaskConfig(TrainingConfig, PeftOptions):
    """Task adaptation of the base model (``oppu-hub train-base``).

    Args:
        base_model: the pretrained base (default SmolLM2-135M-Instruct, offline), a Hub id or a folder.
        output_dir: task-adapted bases go to ``{output_dir}/{task}/{variant}``.
        include_history: also train on the training users' history items (pair tasks), not only their queries.
        max_examples: cap on training examples (a seeded sample) to keep small runs small.
        overwrite: retrain even if a finished base for this configuration exists.
    """

    base_model: str = field(default=DEFAULT_BASE, metadata={"help": "pretrained base: name, Hub id or folder"})
    output_dir: str = field(default="runs/base", metadata={"help": "root folder of task-adapted bases"})
    include_history: bool = field(default=True, metadata={"help": "also train on train users' history items"})
    max_examples: int | None = field(default=None, metadata={"help": "cap on training examples"})
    overwrite: bool = field(default=False, metadata={"help": "retrain an existing base"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    num_train_epochs: float = field(default=2.0, metadata={"help": "training epochs"})

    def target_dir(self) -> Path:
        return Path(self.output_dir) / self.task / self.variant
