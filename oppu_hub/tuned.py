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


# Dev sweeps (2026-12-01, bench/results/tune_users-{task}.json): the cheapest setting within one dev query of the
# best (equal cost: the best scoring). LaMP-2N and 4: the staged grid. LaMP-1 and 7: a staged grid at the low rates
# (1e-4, 3e-4). LaMP-5: lr at 2 epochs, then epochs and targets x r at 3e-4.
# LaMP-2M and LaMP-3 have 1 and 2 dev users, too few to tune on, and take LaMP-2N's values.
TUNED: dict[str, UserAdapterDefaults] = {
    "LaMP-2N": UserAdapterDefaults(learning_rate=3e-3, num_train_epochs=2.0, target_modules=("q_proj", "v_proj"),
                                   lora_r=16),
    "LaMP-1": UserAdapterDefaults(learning_rate=1e-4, num_train_epochs=2.0, target_modules=("q_proj", "v_proj"),
                                  lora_r=8),
    "LaMP-7": UserAdapterDefaults(learning_rate=1e-4, num_train_epochs=2.0, target_modules=("q_proj", "v_proj"),
                                  lora_r=8),
    "LaMP-4": UserAdapterDefaults(learning_rate=3e-3, num_train_epochs=2.0, target_modules=("q_proj", "v_proj"),
                                  lora_r=16),
    "LaMP-5": UserAdapterDefaults(learning_rate=3e-4, num_train_epochs=2.0, target_modules=("q_proj", "v_proj"),
                                  lora_r=8),
}
FALLBACK = TUNED["LaMP-2N"]
TUNED_FIELDS = tuple(f.name for f in fields(UserAdapterDefaults))  # the settings swept per task


def user_defaults(task: str) -> UserAdapterDefaults:
    """The dev-tuned defaults of ``task`` (its LaMP name or alias), else :data:`FALLBACK`."""
    return TUNED.get(get_task(task).name, FALLBACK)
