"""The configuration of the collective stage of two-stage personalization (``oppu-hub train-collective``;
:mod:`trainers.collective` trains it). Torch-free, as trl's ``*_config.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from oppu_hub.protocol import BASE_MAX_EXAMPLES
from oppu_hub.tuned import TUNED_SETTINGS, user_settings

from .training_config import PeftOptions, TrainingConfig

CollectiveSource = Literal["train", "pooled"]


@dataclass
class CollectiveConfig(TrainingConfig, PeftOptions):
    """Stage A of "collective then personal" (``oppu-hub train-collective``): one LoRA trained on many users'
    history items, the examples per-user adapters train on (prompt/answer pairs; next-token text on LaMP-1 and
    LaMP-7's unpaired histories), on top of a task-adapted base, then merged into a new base folder. Stage B is
    ``oppu-hub train-users --base_dir`` that folder.

    Args:
        base_dir: the task-adapted base (``oppu-hub train-base`` output) stage A starts from.
        users: whose histories: ``train`` (default) every training user's (the ``train`` split's): no evaluated
            user's data; ``pooled`` the users of ``split`` (the pooled control's training data,
            :func:`oppu_hub.baselines.pooled_split`): the evaluated users' items then shape a model every user
            shares.
        split: the evaluated split. ``pooled`` pools its users; either source leaves out every item that is one of
            its queries (:func:`oppu_hub.data.query_keys`: a co-authored paper can be a history item and a query);
            ``None`` (``--split none``; ``train`` only) leaves nothing out.
        user_ids: only these users of the source (default: all).
        max_users: only the first N users of the source.
        max_history: each user's most recent N history items (as ``train-users --max_history``).
        history_format: ``full`` items, or only their ``input`` / ``output`` side (as ``train-users``).
        max_examples: cap on training examples, a seeded sample (default 3000, the protocol's task-adaptation
            cap: :data:`oppu_hub.protocol.BASE_MAX_EXAMPLES`); ``None`` for all.
        output_dir: the merged base goes to ``{output_dir}/{task}/{variant}-collective-{users}``.
        overwrite: retrain even if a finished collective base for this configuration exists.

    The learning rate, epochs, target modules and rank are the fields of :class:`TrainingConfig` and
    :class:`PeftOptions`; :meth:`for_task` (and the command) default them to the task's dev-tuned user-adapter
    values (:func:`oppu_hub.tuned.user_settings`, those of the pooled control), alpha to the rank. Stage A is a
    LoRA: only a LoRA merges into the base exactly.
    """

    base_dir: str = field(default="runs/base/LaMP-2N/k0", metadata={"help": "task-adapted base folder (stage A "
                                                                            "starts from it)"})
    users: CollectiveSource = field(default="train", metadata={
        "help": "whose histories: train (the training users; no evaluated user's data) | pooled (the users of "
                "--split: their items shape a shared model)"})
    split: str | None = field(default="test", metadata={
        "help": "evaluated split: pooled from (--users pooled); its queries are left out of either source (none: "
                "nothing left out, --users train only)"})
    user_ids: list[str] | None = field(default=None, metadata={"help": "only these users of the source"})
    max_users: int | None = field(default=None, metadata={"help": "only the first N users of the source"})
    max_history: int | None = field(default=None, metadata={"help": "most recent N history items per user"})
    history_format: str = field(default="full", metadata={"help": "full | input | output (pair tasks' items)"})
    max_examples: int | None = field(default=BASE_MAX_EXAMPLES, metadata={
        "help": "cap on training examples (a seeded sample; 0 or none: all)"})
    output_dir: str = field(default="runs/collective", metadata={"help": "root folder of collective bases"})
    overwrite: bool = field(default=False, metadata={"help": "retrain an existing collective base"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "batch size"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split is not None and self.split.lower() in ("", "none"):
            self.split = None
        if self.users not in ("train", "pooled"):
            raise ValueError(f"users must be 'train' or 'pooled', not {self.users!r}")
        if self.users == "pooled" and not self.split:
            raise ValueError("--users pooled pools the users of --split: give one (test, dev)")
        if self.profile:
            raise ValueError("the collective stage has no profile (PAG) variant")
        if self.peft_type != "LORA":
            raise ValueError(f"the collective stage is a LoRA merged into the base, not {self.peft_type}")

    @classmethod
    def for_task(cls, task: str, **fields: Any) -> CollectiveConfig:
        """A config for ``task`` whose learning rate, epochs, target modules, rank and alpha are the ones
        :func:`oppu_hub.tuned.user_settings` resolves, unless ``fields`` give them (as the command does)."""
        given = {k: fields.pop(k) for k in TUNED_SETTINGS if k in fields}
        return cls(task=task, **user_settings(task, **given), **fields)

    def target_dir(self) -> Path:
        return Path(self.output_dir) / self.task / f"{self.variant}-collective-{self.users}"
