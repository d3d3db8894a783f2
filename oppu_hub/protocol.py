"""The leaderboard's training protocol: the OPPU reference code's, at this model's scale (docs/eval.md, "The
protocol").

* **Base.** Task adaptation on every training (non-test) user's examples: their queries and, for pair tasks, their
  history items. Only LaMP-1 and LaMP-5 have more than :data:`BASE_MAX_EXAMPLES`; they take a seeded sample of that
  many. The epochs are chosen per task on **dev** (``np-k0`` scored after 1, 2, ... epochs; the last before the
  score stops improving: :func:`choose_epochs`), by ``bench/protocol_dev.py``.
* **Users.** Each user's whole history, the newest :data:`USER_MAX_HISTORY` items for the most active users. The
  user-adapter settings (:mod:`oppu_hub.tuned`) are chosen per task on dev, on top of that base.

The per-task choices are data, written by ``bench/protocol_dev.py`` with their provenance into
``oppu_hub/protocol.json`` (:func:`choices`); this module holds the fixed settings and reads that file. Tasks with
fewer than :data:`MIN_DEV_USERS` dev users take :data:`FALLBACK_TASK`'s choices.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from .tasks import get_task

BASE_MAX_EXAMPLES = 3000  # LaMP-5 has ~75k examples and LaMP-1 ~18k; every other task fewer than 3000
BASE_BATCH_SIZE = 16
BASE_LEARNING_RATE = 1e-3  # the 5e-4 of batch 4, scaled by sqrt(4) for batch 16
BASE_MAX_EPOCHS = 3  # the OPPU reference code's epochs: the most the dev curve tries
USER_MAX_HISTORY = 128  # items per user; 14 of LaMP-2N/4/5's ~220 test users have more
MIN_DEV_USERS = 10  # fewer dev users (LaMP-2M: 1, LaMP-3: 2) are too few to choose on
FALLBACK_TASK = "LaMP-2N"
CHOICES = Path(__file__).with_name("protocol.json")


@cache
def choices() -> dict[str, dict[str, Any]]:
    """The per-task dev choices: ``{task: {"base_epochs", "user": {...}, "source"}}``."""
    return json.loads(CHOICES.read_text())


def task_choices(task: str) -> dict[str, Any]:
    """The dev choices of ``task`` (its LaMP name or alias), else :data:`FALLBACK_TASK`'s."""
    table = choices()
    return table.get(get_task(task).name, table[FALLBACK_TASK])


def base_epochs(task: str) -> float:
    """The task-adaptation epochs chosen on dev for ``task``."""
    return float(task_choices(task)["base_epochs"])


def choose_epochs(scores: Sequence[float], higher_is_better: bool = True) -> int:
    """The epochs where a dev curve (``scores[e - 1]`` after ``e`` epochs) stops improving: the last epoch whose
    score beat the one before (a tie is no improvement)."""
    sign = 1 if higher_is_better else -1
    chosen = 1
    for epoch in range(2, len(scores) + 1):
        if sign * scores[epoch - 1] <= sign * scores[epoch - 2]:
            break
        chosen = epoch
    return chosen


def record_choice(task: str, entry: dict[str, Any], path: Path = CHOICES) -> None:
    """Merge ``entry`` into ``task``'s record in ``path`` (locked read-modify-write, atomic replace: several tasks'
    selections may run at once)."""
    name = get_task(task).name
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = json.loads(path.read_text()) if path.exists() else {}
        table[name] = {**table.get(name, {}), **entry}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    choices.cache_clear()
