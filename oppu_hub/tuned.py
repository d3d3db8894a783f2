"""Per-task user-adapter defaults for the 135M default base, chosen on **dev** users by ``bench/tune_users.py``
(sweep tables and the reasoning: ``docs/tuning.md``). Tasks without a sweep of their own use :data:`FALLBACK`."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .tasks import get_task


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


# LaMP-2N dev sweep (2026-12-01, bench/results/tune_users-LaMP-2N.json): the cheapest setting within one dev query
# of the best. The other tasks have not been swept yet and take the same values.
TUNED: dict[str, UserAdapterDefaults] = {
    "LaMP-2N": UserAdapterDefaults(learning_rate=3e-3, num_train_epochs=2.0, target_modules=("q_proj", "v_proj"),
                                   lora_r=16),
}
FALLBACK = TUNED["LaMP-2N"]
TUNED_FIELDS = tuple(f.name for f in fields(UserAdapterDefaults))  # the settings swept per task


def user_defaults(task: str) -> UserAdapterDefaults:
    """The dev-tuned defaults of ``task`` (its LaMP name or alias), else :data:`FALLBACK`."""
    return TUNED.get(get_task(task).name, FALLBACK)
