"""A concurrent user's epoch checkpoint (:mod:`trainers.concurrent`): its slot's tensors (LoRA weights and AdamW
moments) and progress, written atomically to the user's owner-only ``.{user}.work/slot-checkpoint`` and read back
only under the same key (a hash of what the user trains on), so a checkpoint of other rows or settings is
ignored."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from oppu_hub.io import atomic_dir, private_dir, read_json, recover_dir, write_json

SLOT_CHECKPOINT = "slot-checkpoint"


def checkpoint_key(rows: Any, plan: list[list[int]], init: Path | None, learning_rate: float) -> str:
    """The key of a checkpoint of training ``rows`` in the order of ``plan`` from ``init`` (a saved adapter, or
    ``None`` for the LoRA init) at ``learning_rate``."""
    return hashlib.sha256(json.dumps([rows, plan, str(init), learning_rate]).encode()).hexdigest()


def save_checkpoint(work_dir: Path, tensors: Mapping[str, torch.Tensor], progress: Mapping[str, Any]) -> None:
    """Write ``tensors`` and ``progress`` (JSON; its ``key`` from :func:`checkpoint_key`) into ``work_dir``
    (atomically; owner-only)."""
    folder = private_dir(work_dir) / SLOT_CHECKPOINT
    with atomic_dir(folder, overwrite=True, mode=0o700) as tmp:
        save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, str(tmp / "slot.safetensors"))
        write_json(tmp / "slot.json", dict(progress))


def load_checkpoint(work_dir: Path, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and progress of the checkpoint in ``work_dir`` written under ``key``; ``None`` when there is
    none (a save a crash interrupted is finished or dropped first)."""
    folder = work_dir / SLOT_CHECKPOINT
    recover_dir(folder)
    if not (folder / "slot.json").is_file():
        return None
    progress = read_json(folder / "slot.json")
    if progress.get("key") != key:
        return None
    return load_file(str(folder / "slot.safetensors")), progress
