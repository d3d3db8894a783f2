"""What both OPPU trainers share: the hyperparameters every run has, the ``SFTConfig`` built from them
(CPU-friendly defaults), PEFT configs, checkpoint-resume helpers, and how many users fit in memory at once."""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from peft import IA3Config, LoraConfig, PeftConfig, PromptTuningConfig, TaskType
from tqdm.auto import tqdm
from trl import SFTConfig

from oppu_hub.tasks import get_task

logger = logging.getLogger(__name__)

Precision = Literal["auto", "bf16", "fp32"]
PeftType = Literal["LORA", "IA3", "PROMPT_TUNING"]
ALL_LINEAR = "all-linear"


@dataclass
class TrainingConfig:
    """Hyperparameters every oppu-hub training run has.

    Args:
        task: LaMP task name (``LaMP-2N``, ``LaMP-3``... or an alias such as ``lamp2n``; stored canonical).
        data_dir: folder of LaMP-format task data (``{data_dir}/{task}/{split}_questions.json``).
        k: history items retrieved (BM25) into every training prompt; 0 = no retrieval.
        profile: put the user's textual profile (``oppu-hub profiles``) into every prompt.
        profiles_dir: where user profiles are cached.
        learning_rate: peak learning rate (linear decay).
        num_train_epochs: passes over the training examples.
        per_device_train_batch_size: examples per step.
        gradient_accumulation_steps: steps per optimizer update.
        max_prompt_length: token budget of a prompt (history and profile are truncated, never the query).
        precision: ``auto`` trains in bf16 where the hardware has it (CUDA, or CPUs with AVX512-BF16/AMX), else fp32.
        seed: seeds data order and initialisation.
        logging_steps: log the loss every this many optimizer steps.
    """

    task: str = field(default="LaMP-2N", metadata={"help": "LaMP task: LaMP-1, 2N, 2M, 3, 4, 5, 7"})
    data_dir: str = field(default="data", metadata={"help": "folder of LaMP-format data ({task}/{split}_*.json)"})
    k: int = field(default=0, metadata={"help": "BM25-retrieved history items in each prompt"})
    profile: bool = field(default=False, metadata={"help": "put the user's profile text into each prompt"})
    profiles_dir: str = field(default="runs/profiles", metadata={"help": "cache of user profile texts"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    num_train_epochs: float = field(default=3.0, metadata={"help": "training epochs"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "batch size"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    max_prompt_length: int = field(default=384, metadata={"help": "token budget of one prompt"})
    precision: Precision = field(default="auto", metadata={"help": "auto | bf16 | fp32"})
    seed: int = field(default=42, metadata={"help": "random seed"})
    logging_steps: int = field(default=10, metadata={"help": "log every N steps"})

    def __post_init__(self) -> None:
        self.task = get_task(self.task).name  # canonical, and an unknown task fails here

    @property
    def variant(self) -> str:
        """Names the prompt variant: ``k0``, ``k4``, ``k0-profile``, ``k1-profile``."""
        return f"k{self.k}" + ("-profile" if self.profile else "")


@dataclass
class PeftOptions:
    """The PEFT method of an adapter.

    Args:
        peft_type: ``LORA`` (default), ``IA3`` or ``PROMPT_TUNING``.
        lora_r / lora_alpha / lora_dropout: LoRA rank, scale and dropout (the paper: r=8, alpha=8).
        target_modules: modules LoRA/IA3 wrap (the reference code: q_proj, v_proj); ``all-linear`` for every
            linear layer but the LM head.
        num_virtual_tokens: soft-prompt length for prompt tuning.
    """

    peft_type: PeftType = field(default="LORA", metadata={"help": "LORA | IA3 | PROMPT_TUNING"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=8, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"],
                                      metadata={"help": "modules to adapt (LoRA, IA3)"})
    num_virtual_tokens: int = field(default=16, metadata={"help": "soft prompt length (prompt tuning)"})

    def targets(self) -> str | list[str]:
        """``target_modules`` as peft takes it: the string ``"all-linear"`` (every linear layer but the LM head)
        or a list of module names."""
        return ALL_LINEAR if list(self.target_modules) == [ALL_LINEAR] else list(self.target_modules)

    def peft_config(self) -> PeftConfig:
        if self.peft_type == "LORA":
            return LoraConfig(task_type=TaskType.CAUSAL_LM, r=self.lora_r, lora_alpha=self.lora_alpha,
                              lora_dropout=self.lora_dropout, target_modules=self.targets())
        if self.peft_type == "IA3":
            # IA3 scales the attention projections and, as feed-forward module, the MLP's down projection.
            targets = [*self.target_modules, "down_proj"]
            return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=targets, feedforward_modules=["down_proj"])
        if self.peft_type == "PROMPT_TUNING":
            return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=self.num_virtual_tokens)
        raise ValueError(f"unknown peft_type {self.peft_type!r}; expected LORA, IA3 or PROMPT_TUNING")


def bf16_available() -> bool:
    """Whether training in bf16 is fast here: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def sft_config(config: TrainingConfig, output_dir: str | Path, num_rows: int, **overrides: Any) -> SFTConfig:
    """An ``SFTConfig`` for ``config`` over ``num_rows`` training examples: CPU when there is no CUDA, no
    activation checkpointing (small models), warmup by :func:`warmup_steps`, no external reporting, one
    checkpoint kept (for resume)."""
    bf16 = config.precision == "bf16" or (config.precision == "auto" and bf16_available())
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


def step_bar() -> tqdm:
    """The optimizer-step bar under a run's user bar: a long user (a pooled adapter: minutes per user) shows
    progress and an ETA. Trainers grow its ``total`` as users start. ``TQDM_DISABLE=1`` when it is made hides it
    (Ray workers set it; tqdm itself reads it only at import)."""
    return tqdm(total=0, unit="step", desc="steps", leave=False, dynamic_ncols=True,
                disable=os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true"))


def set_threads() -> None:
    """Use every core for intra-op work (torch defaults to fewer on some containers), unless ``OMP_NUM_THREADS``
    says how many (several processes sharing a machine)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    n = os.cpu_count() or 1
    if torch.get_num_threads() < n:
        torch.set_num_threads(n)
