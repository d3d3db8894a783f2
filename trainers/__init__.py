"""TRL ``SFTTrainer`` subclasses for OPPU: task adaptation of the base and one PEFT per user, the run over many
users (:mod:`trainers.runs`) with its sequential, concurrent and Ray executors, and the collective stage of two-stage
personalization (:mod:`trainers.collective`). Each trainer's config is a torch-free ``*_config`` module beside it.

The names below load their module on first use (as trl's ``_LazyModule``), so importing a config module does not
load torch, transformers, peft or trl."""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "BaseTaskConfig": "base_config", "BaseTaskTrainer": "base", "CollectiveConfig": "collective_config",
    "ConcurrentExecutor": "runs", "Executor": "runs",
    "PeftOptions": "training_config", "SequentialExecutor": "runs", "TrainingConfig": "training_config",
    "UserAdapterConfig": "user_config", "UserAdapterTrainer": "user", "UserJob": "user", "UserRunReport": "runs",
    "train_base": "base", "train_collective": "collective", "train_users": "runs",
}

__all__ = list(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
