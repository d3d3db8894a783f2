"""What both OPPU trainers share: the ``SFTConfig`` built from a :class:`~trainers.training_config.TrainingConfig`
(CPU-friendly defaults), the learning-rate schedule, checkpoint-resume helpers, and how many users fit in memory at
once."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from trl import SFTConfig

from oppu_hub.models import bf16_available

from .training_config import TrainingConfig

WARMUP_RATIO = 0.05
MIN_WARMUP_RUN = 20  # optimizer steps; shorter runs get no warmup


def optimizer_steps(config: TrainingConfig, num_rows: int) -> int:
    """Optimizer updates a run over ``num_rows`` examples makes (as ``Trainer`` counts them)."""
    batches = math.ceil(num_rows / config.per_device_train_batch_size)
    per_epoch = max(1, math.ceil(batches / config.gradient_accumulation_steps))
    return max(1, math.ceil(config.num_train_epochs * per_epoch))


def warmup_steps(total_steps: int) -> int:
    """Linear-warmup steps of a run of ``total_steps`` updates: ``ceil(5%)``, but none below
    ``MIN_WARMUP_RUN`` steps. ``transformers``' warmup starts at lr 0, so on a short user run even one warmup step
    would waste a large share of its few real updates."""
    return 0 if total_steps < MIN_WARMUP_RUN else math.ceil(WARMUP_RATIO * total_steps)


def lr_factor(step: int, total: int) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based) of ``total``: ``transformers``' linear
    schedule with :func:`warmup_steps` warmup. Without warmup every step, the last too, has a non-zero rate."""
    warmup = warmup_steps(total)
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


COMPLETION_TOKENS = 128  # a training row's budget beyond its prompt (answer + EOS)


def max_length(config: TrainingConfig) -> int:
    """Tokens a training row is truncated to (keeping its start): the prompt budget plus the answer's."""
    return config.max_prompt_length + COMPLETION_TOKENS


def trains_in_bf16(config: TrainingConfig) -> bool:
    """Whether ``config`` trains in bf16: asked for, or ``auto`` where bf16 is fast (:func:`bf16_available`)."""
    return config.precision == "bf16" or (config.precision == "auto" and bf16_available())


def sft_config(config: TrainingConfig, output_dir: str | Path, num_rows: int, **overrides: Any) -> SFTConfig:
    """An ``SFTConfig`` for ``config`` over ``num_rows`` training examples: CPU when there is no CUDA, no
    activation checkpointing (small models), warmup by :func:`warmup_steps`, no external reporting, one
    checkpoint kept (for resume)."""
    bf16 = trains_in_bf16(config)
    args: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=max_length(config),
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=False,
        gradient_checkpointing=False,
        lr_scheduler_type="linear",
        warmup_steps=warmup_steps(optimizer_steps(config, num_rows)),
        report_to=[],
        save_strategy="epoch",
        save_total_limit=1,
        dataloader_num_workers=0,
    )
    args.update(overrides)
    return SFTConfig(**args)


# Shared runs (the task-adapted base, the collective stage) take up to an hour on CPU: they checkpoint every tenth
# of their steps, so a stopped session loses little; a user's run is short and checkpoints per epoch.
STEP_CHECKPOINTS: dict[str, Any] = {"save_strategy": "steps", "save_steps": 0.1}


def last_checkpoint(work_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder under ``work_dir`` (an interrupted run resumes from it)."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in work_dir.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    return str(max(steps)[1]) if steps else None


def final_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The run's average training loss (``train_loss``), else the last logged loss."""
    for entry in reversed(log_history):
        if "train_loss" in entry:
            return float(entry["train_loss"])
    losses = [e["loss"] for e in log_history if "loss" in e]
    return float(losses[-1]) if losses else None


MAX_AUTO_SLOTS = 8  # users trained together when ``concurrent`` is 0 (auto) and memory allows
MAX_AUTO_SLOTS_CUDA = 64  # the same on a GPU, where a step's cost barely grows with its rows
MAX_BATCH_TOKENS = {"cuda": 16384}  # padded tokens per concurrent micro-batch by device type; 2048 elsewhere


def auto_slots() -> int:
    """Users trained together when ``concurrent`` is 0: :data:`MAX_AUTO_SLOTS`, or :data:`MAX_AUTO_SLOTS_CUDA` on a
    GPU (memory permitting: :func:`slots_that_fit`)."""
    return MAX_AUTO_SLOTS_CUDA if torch.cuda.is_available() else MAX_AUTO_SLOTS


def check_training(config: TrainingConfig) -> None:
    """Refuse hyperparameters no trainer can run (before anything is loaded)."""
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, not {getattr(config, name)}")
    if config.num_train_epochs <= 0:
        raise ValueError(f"num_train_epochs must be positive, not {config.num_train_epochs}")


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device``: the CUDA allocator's free memory, else the host's available
    memory (``MemAvailable``, else free pages)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def slots_that_fit(per_slot_bytes: int, device: torch.device, most: int) -> int:
    """How many users (at most ``most``, at least 1) can train together when each costs ``per_slot_bytes``:
    those that fit in half of :func:`free_memory` (the other half is left to activations and everything else)."""
    return max(1, min(most, free_memory(device) // 2 // max(1, per_slot_bytes)))


StepWatcher = Callable[[int, int], None]
_STEP_WATCHERS: ContextVar[tuple[StepWatcher, ...]] = ContextVar("oppu_step_watchers", default=())


@contextlib.contextmanager
def watch_steps(watcher: StepWatcher) -> Iterator[None]:
    """Call ``watcher(done, total)`` each time a step bar (:func:`step_bar`) made in this context advances: the
    optimizer steps of a ``train_users`` run in this thread, sequential or concurrent (the Space's progress bar)."""
    token = _STEP_WATCHERS.set((*_STEP_WATCHERS.get(), watcher))
    try:
        yield
    finally:
        _STEP_WATCHERS.reset(token)


class WatchedBar(tqdm):
    """A tqdm bar that also tells the :func:`watch_steps` watchers of its context how far it is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.watchers = _STEP_WATCHERS.get()
        self.done = 0  # counted here too: a disabled tqdm does not count
        super().__init__(*args, **kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        self.done += int(n or 0)
        for watcher in self.watchers:
            watcher(self.done, int(self.total or 0))
        return shown


def step_bar() -> WatchedBar:
    """The optimizer-step bar under a run's user bar: a long user (a pooled adapter: minutes per user) shows
    progress and an ETA. Trainers grow its ``total`` as users start. ``TQDM_DISABLE=1`` when it is made hides it
    (Ray workers set it; tqdm itself reads it only at import). :func:`watch_steps` watchers see every update."""
    return WatchedBar(total=0, unit="step", desc="steps", leave=False, dynamic_ncols=True,
                      disable=os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true"))


def set_threads() -> None:
    """Use every core for intra-op work (torch defaults to fewer on some containers), unless ``OMP_NUM_THREADS``
    says how many (several processes sharing a machine)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    n = os.cpu_count() or 1
    if torch.get_num_threads() < n:
        torch.set_num_threads(n)
