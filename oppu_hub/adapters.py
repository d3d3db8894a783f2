"""Per-user adapter folders: a standard PEFT folder (``adapter_config.json``, ``adapter_model.safetensors``)
plus ``oppu.json``, the record of who, what and on which base it was trained; and loading that refuses an
adapter trained on a different base."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import read_json, write_json

RECORD_FILE = "oppu.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterBaseMismatchError(ValueError):
    """An adapter is being loaded onto a base model other than the one it was trained on."""


class AdapterSettingMismatchError(ValueError):
    """An adapter is used with prompts of another k / profile / history format than it was trained with."""


class AdapterNotFoundError(FileNotFoundError):
    """No complete adapter exists where one was expected."""


@dataclass
class AdapterRecord:
    """What ``oppu.json`` holds for one user's adapter.

    Args:
        user_id: the LaMP user id.
        task: the task name (``LaMP-2N``...).
        base_model: the base it was trained on (id or path of the task-adapted base).
        base_fingerprint: :func:`oppu_hub.models.model_fingerprint` of that base.
        peft_type: ``LORA``, ``IA3`` or ``PROMPT_TUNING``.
        k: retrieved history items in each training prompt.
        profile: whether training prompts carried the user's profile text.
        history_format: ``full`` items, or only their ``input`` / ``output`` side.
        num_history_items: history items trained on (cumulative over ``--update`` runs).
        last_item_id / last_item_date: the newest history item seen.
        trained_item_ids: ids of every history item trained on (``--update`` trains on the others); empty in
            records written before it existed.
        train_loss: final training loss of the last run.
        training: hyperparameters of the run.
        metrics: evaluation scores, filled in by evaluation when known.
    """

    user_id: str
    task: str
    base_model: str
    base_fingerprint: str
    peft_type: str = "LORA"
    k: int = 0
    profile: bool = False
    history_format: str = "full"
    num_history_items: int = 0
    last_item_id: str | None = None
    last_item_date: str | None = None
    trained_item_ids: list[str] = field(default_factory=list)
    train_loss: float | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    oppu_hub_version: str = field(default_factory=lambda: _version())

    def save(self, folder: str | Path) -> Path:
        return write_json(Path(folder) / RECORD_FILE, dataclasses.asdict(self))

    @classmethod
    def from_folder(cls, folder: str | Path) -> AdapterRecord:
        path = Path(folder) / RECORD_FILE
        if not path.exists():
            raise AdapterNotFoundError(f"{folder} has no {RECORD_FILE}: not an oppu-hub adapter folder")
        data = read_json(path)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def is_complete(folder: str | Path) -> bool:
    """Whether ``folder`` holds a whole adapter (PEFT files and record)."""
    folder = Path(folder)
    return all((folder / name).is_file() for name in (*PEFT_FILES, RECORD_FILE))


def adapter_identity(folder: str | Path) -> str:
    """What makes two adapter folders the same adapter: the resolved folder plus a hash of its PEFT files and
    record. A reloaded folder with new weights (``--update``, a new Hub revision) gets a new identity."""
    folder = Path(folder).resolve()
    h = hashlib.sha256(str(folder).encode())
    for name in (*PEFT_FILES, RECORD_FILE):
        h.update(b"\0" + name.encode() + b"\0" + (folder / name).read_bytes())
    return h.hexdigest()


def adapter_name(user_id: str) -> str:
    """A peft adapter name for a user id: peft names are ``ModuleDict`` keys, so no dots (``"j.smith"``) and only
    ``[A-Za-z0-9_-]``; a short hash of the id keeps changed names distinct."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", user_id).strip("_") or "user"
    if name == user_id and len(name) <= 64:
        return name
    return f"{name[:55]}_{hashlib.sha1(user_id.encode()).hexdigest()[:8]}"


def check_base(record: AdapterRecord, base_fingerprint: str, *, where: str = "") -> None:
    """Raise :class:`AdapterBaseMismatchError` unless the adapter was trained on this base."""
    if record.base_fingerprint != base_fingerprint:
        raise AdapterBaseMismatchError(
            f"adapter {where or record.user_id!r} was trained on base {record.base_model!r} "
            f"(fingerprint {record.base_fingerprint}) but the loaded base has fingerprint {base_fingerprint}; "
            f"load the base it was trained on")


def check_setting(record: AdapterRecord, *, k: int, profile: bool, history_format: str = "full",
                  where: str = "", hint: str = "or pass --allow_setting_mismatch to use it anyway") -> None:
    """Raise :class:`AdapterSettingMismatchError` unless the adapter was trained with prompts of this k, profile
    setting and history format (the paper pairs each column with adapters trained the same way)."""
    want = {"k": k, "profile": profile, "history_format": history_format}
    have = {"k": record.k, "profile": record.profile, "history_format": record.history_format}
    if want != have:
        diff = ", ".join(f"{key}={have[key]!r} (requested {want[key]!r})" for key in want if want[key] != have[key])
        raise AdapterSettingMismatchError(
            f"adapter {where or record.user_id!r} was trained with {diff}; train adapters with the requested "
            f"setting{', ' + hint if hint else ''}")


def _version() -> str:
    from . import __version__

    return __version__
