"""The configuration of per-user adapter training (``oppu-hub train-users``; :mod:`trainers.runs` runs it).
Torch-free, as trl's ``*_config.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oppu_hub.io import safe_name
from oppu_hub.tuned import TUNED_SETTINGS, user_settings

from .training_config import PeftOptions, TrainingConfig


@dataclass
class UserAdapterConfig(TrainingConfig, PeftOptions):
    """Per-user adapter training (``oppu-hub train-users``).

    Args:
        base_dir: the task-adapted base (``oppu-hub train-base`` output) the adapters sit on.
        split: whose users: ``test`` (default, as the paper), ``dev`` (for tuning) or ``train``.
        users: train only these user ids (default: every user of the split).
        max_users: train only the first N users of the split.
        output_dir: adapters go to ``{output_dir}/{task}/{variant}-{peft}/{user}`` (owner-only: 0700 folders,
            0600 files; so are the ``.{user}.work`` checkpoint folders, which hold the user's data order).
        update: continue an existing adapter on the history items it was not trained on yet, on the same base and
            with the same k / profile / history format (anything else is refused).
        push_to_hub: push each finished adapter to ``hub_store`` (one private repo per user and task).
        hub_store: where to push: ``hub:NAMESPACE``, a local store folder, or ``None`` for ``$OPPU_HUB_STORE``
            (else the local default store).
        max_history: train on at most the N most recent history items of a user.
        history_format: ``full`` items, or only their ``input`` / ``output`` side (the paper's Table 4 ablation).
        concurrent: LoRA users trained together in the same batches over the shared base
            (:mod:`trainers.concurrent`): ``0`` (default) = as many as fit in free memory, at most
            :data:`trainers.common.MAX_AUTO_SLOTS`; ``N`` = N at a time; ``1`` = one after another with
            ``UserAdapterTrainer``. IA3 and prompt tuning always train one after another
            (:data:`trainers.peft_types.PEFT_TYPES` says which types train concurrently).
        load_in_4bit: train on the base quantized to NF4 (QLoRA; :class:`oppu_hub.models.BaseModelConfig`). The
            adapters are tied to that quantized base: predict with ``--load_in_4bit`` too.
    """

    base_dir: str = field(default="runs/base/LaMP-2N/k0", metadata={"help": "task-adapted base folder"})
    split: str = field(default="test", metadata={"help": "users of this split: test | dev | train"})
    users: list[str] | None = field(default=None, metadata={"help": "only these user ids"})
    max_users: int | None = field(default=None, metadata={"help": "only the first N users"})
    output_dir: str = field(default="runs/users", metadata={"help": "root folder of user adapters"})
    update: bool = field(default=False, metadata={"help": "continue adapters on history items not trained on yet"})
    push_to_hub: bool = field(default=False, metadata={"help": "push each finished adapter to --hub_store"})
    hub_store: str | None = field(default=None, metadata={"help": "hub:NAMESPACE or a local store folder"})
    max_history: int | None = field(default=None, metadata={"help": "most recent N history items per user"})
    history_format: str = field(default="full", metadata={"help": "full | input | output (pair tasks' items)"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "batch size"})
    concurrent: int = field(default=0, metadata={
        "help": "LoRA users trained together: 0 = as many as fit (at most 8; 64 on a GPU), 1 = one by one"})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "train on the base quantized to NF4 (QLoRA, bitsandbytes); predict with --load_in_4bit too"})

    @classmethod
    def for_task(cls, task: str, **fields: Any) -> UserAdapterConfig:
        """A config for ``task`` whose learning rate, epochs, target modules, rank and alpha are the ones
        :func:`oppu_hub.tuned.user_settings` resolves (the task's dev-tuned values), unless ``fields`` give them
        (as ``oppu-hub train-users --task TASK`` does)."""
        given = {k: fields.pop(k) for k in TUNED_SETTINGS if k in fields}
        return cls(task=task, **user_settings(task, **given), **fields)

    def adapters_dir(self) -> Path:
        suffix = "" if self.history_format == "full" else f"-{self.history_format}"
        return Path(self.output_dir) / self.task / f"{self.variant}-{self.peft_type.lower()}{suffix}"

    def adapter_folder(self, user_id: str) -> Path:
        """Where ``user_id``'s adapter goes: its :func:`~oppu_hub.io.safe_name` in :meth:`adapters_dir`."""
        return self.adapters_dir() / safe_name(user_id)
