"""The configuration every oppu-hub training run has: its hyperparameters (:class:`TrainingConfig`) and its
adapter's PEFT method (:class:`PeftOptions`). Torch-free, as trl's ``*_config.py``: command registration imports it
without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from oppu_hub.tasks import get_task

from .peft_types import PEFT_TYPES, PeftType, build_peft_config

if TYPE_CHECKING:
    from peft import PeftConfig

Precision = Literal["auto", "bf16", "fp32"]
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
        peft_type: ``LORA`` (default), ``IA3`` or ``PROMPT_TUNING`` (:data:`trainers.peft_types.PEFT_TYPES`).
        lora_r / lora_alpha / lora_dropout: LoRA rank, scale and dropout (the paper: r=8, alpha=8).
        target_modules: modules LoRA/IA3 wrap (the reference code: q_proj, v_proj); ``all-linear`` for every
            linear layer but the LM head.
        num_virtual_tokens: soft-prompt length for prompt tuning.
    """

    peft_type: PeftType = field(default="LORA", metadata={"help": " | ".join(PEFT_TYPES)})
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
        """The peft config of these options (:func:`trainers.peft_types.build_peft_config`)."""
        return build_peft_config(self)
