"""Per-task user-adapter defaults for the 135M default base, chosen on **dev** users on top of the protocol's
task-adapted base (:mod:`oppu_hub.protocol`; sweeps: ``bench/protocol_dev.py``, reasoning: ``docs/tuning.md``).
They are read from ``oppu_hub/protocol.json``; a task without a choice of its own takes the fallback task's."""

from __future__ import annotations

from dataclasses import dataclass, fields

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


def user_defaults(task: str) -> UserAdapterDefaults:
    """The dev-tuned defaults of ``task`` (its LaMP name or alias), else the fallback task's."""
    user = task_choices(task)["user"]
    return UserAdapterDefaults(learning_rate=float(user["learning_rate"]),
                               num_train_epochs=float(user["num_train_epochs"]),
                               target_modules=tuple(user["target_modules"]), lora_r=int(user["lora_r"]))
