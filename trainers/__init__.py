"""TRL ``SFTTrainer`` subclasses for OPPU: task adaptation of the base and one PEFT per user."""

from .base import BaseTaskConfig, BaseTaskTrainer, train_base
from .common import PeftOptions, TrainingConfig
from .user import UserAdapterConfig, UserAdapterTrainer, train_users

__all__ = [
    "BaseTaskConfig", "BaseTaskTrainer", "PeftOptions", "TrainingConfig", "UserAdapterConfig",
    "UserAdapterTrainer", "train_base", "train_users",
]
