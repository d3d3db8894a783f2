"""Per-task user-adapter defaults for the 135M default base, chosen on **dev** users on top of the protocol's
task-adapted base (:mod:`oppu_hub.protocol`; sweeps: ``bench/protocol_dev.py``, reasoning: ``docs/tuning.md``).
They are read from ``oppu_hub/protocol.json``; a task without a choice of its own takes the fallback task's."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .protocol import task_choices


@dataclass(frozen=True)
class UserAdapterDefaults:
    """The swept user-adapter settings of one task."""

    learning_rate: float
    num_train_epochs: float
    target_modules: tuple[str, ...]
    lora_r: int

    @property
    def lora_alpha(self) -> int:
        return self.lora_r  # alpha = r throughout (scale 1), as the paper's r=8, alpha=8


TUNED_FIELDS = tuple(f.name for f in fields(UserAdapterDefaults))  # the settings swept per task
TUNED_SETTINGS = (*TUNED_FIELDS, "lora_alpha")  # the config fields user_settings resolves


def user_defaults(task: str) -> UserAdapterDefaults:
    """The dev-tuned defaults of ``task`` (its LaMP name or alias), else the fallback task's."""
    user = task_choices(task)["user"]
    return UserAdapterDefaults(learning_rate=float(user["learning_rate"]),
                               num_train_epochs=float(user["num_train_epochs"]),
                               target_modules=tuple(user["target_modules"]), lora_r=int(user["lora_r"]))


def user_settings(task: str, **given: Any) -> dict[str, Any]:
    """The user-adapter settings of ``task``, resolved in one place for ``train-users``, ``eval``, the demo, the
    Space and the benches: the task's dev-tuned values, overridden by the ``given`` ones that are not ``None``; alpha
    follows the rank unless given. Keys are :class:`trainers.UserAdapterConfig` fields."""
    tuned = user_defaults(task)
    settings: dict[str, Any] = {"learning_rate": tuned.learning_rate, "num_train_epochs": tuned.num_train_epochs,
                                "target_modules": list(tuned.target_modules), "lora_r": tuned.lora_r}
    settings.update({k: v for k, v in given.items() if v is not None})
    settings.setdefault("lora_alpha", settings["lora_r"])
    return settings

