"""The PEFT types an adapter can be, in one table: how each builds its peft config and what the code around
training and serving asks about it. ``PeftOptions.peft_type`` names a row. Torch-free: peft is imported only when a
config is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from peft import PeftConfig

    from .training_config import PeftOptions

PeftType = Literal["LORA", "IA3", "PROMPT_TUNING"]


@dataclass(frozen=True)
class PeftMethod:
    """One PEFT type.

    Args:
        config_class: its config class in ``peft`` (``LoraConfig``...), built for a causal LM.
        options: that config's arguments from a :class:`~trainers.training_config.PeftOptions`.
        concurrent: users' adapters train together in the slots of :mod:`trainers.concurrent` (its multi-LoRA
            layer); other types train one user after another.
        mixed_batches: rows of different users' adapters can share one generation batch (peft's
            ``adapter_names``); other types are served one adapter group at a time.
        prompt_learning: it adds virtual tokens to the input, not layers to the model (nothing to unload).
    """

    config_class: str
    options: Callable[[PeftOptions], dict[str, Any]]
    concurrent: bool = False
    mixed_batches: bool = False
    prompt_learning: bool = False


PEFT_TYPES: dict[str, PeftMethod] = {
    "LORA": PeftMethod("LoraConfig", lambda o: dict(
        r=o.lora_r, lora_alpha=o.lora_alpha, lora_dropout=o.lora_dropout, target_modules=o.targets()),
        concurrent=True, mixed_batches=True),
    # IA3 scales the attention projections and, as feed-forward module, the MLP's down projection.
    "IA3": PeftMethod("IA3Config", lambda o: dict(
        target_modules=[*o.target_modules, "down_proj"], feedforward_modules=["down_proj"])),
    "PROMPT_TUNING": PeftMethod("PromptTuningConfig", lambda o: dict(num_virtual_tokens=o.num_virtual_tokens),
                                prompt_learning=True),
}


def type_name(peft_type: Any) -> str:
    """The table's name of ``peft_type``: a name such as ``"LORA"``, or peft's ``PeftType`` enum member."""
    return str(getattr(peft_type, "value", peft_type))


def peft_method(peft_type: Any) -> PeftMethod:
    """The row of ``peft_type`` (see :func:`type_name`); an unknown type is a ``ValueError``."""
    name = type_name(peft_type)
    if name not in PEFT_TYPES:
        *others, last = PEFT_TYPES
        raise ValueError(f"unknown peft_type {name!r}; expected {', '.join(others)} or {last}")
    return PEFT_TYPES[name]


def build_peft_config(options: PeftOptions) -> PeftConfig:
    """The peft config of ``options`` for a causal LM."""
    import peft  # here, not at the top: the torch-free config modules import this table

    method = peft_method(options.peft_type)
    return getattr(peft, method.config_class)(task_type=peft.TaskType.CAUSAL_LM, **method.options(options))
