"""TRL ``SFTTrainer`` subclasses for OPPU: task adaptation of the base and one PEFT per user, and the run over
many users (:mod:`trainers.runs`) with its sequential, concurrent and Ray executors."""

from .base import BaseTaskConfig, BaseTaskTrainer, train_base
from .common import PeftOptions, TrainingConfig
from .runs import ConcurrentExecutor, Executor, SequentialExecutor, UserRunReport, train_users
from .user import UserAdapterConfig, UserAdapterTrainer, UserJob

__all__ = [
    "BaseTaskConfig", "BaseTaskTrainer", "ConcurrentExecutor", "Executor", "PeftOptions", "SequentialExecutor",
    "TrainingConfig", "UserAdapterConfig", "UserAdapterTrainer", "UserJob", "UserRunReport", "train_base",
    "train_users",
]
