"""Per-user adapter folders: a standard PEFT folder (``adapter_config.json``, ``adapter_model.safetensors``)
plus ``oppu.json``, the record of who, what and on which base it was trained (and the sha256 of its weights);
their verification (:func:`verify_adapter`: a finished adapter is one that verifies); and the checks that refuse
an adapter trained on another base or with other prompts (:func:`oppu_hub.inference.load_adapter` loads one)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open

from . import __version__
from .io import keeps_name, name_digest, read_json, sha256_file, write_json
from .tasks import UnknownTaskError, get_task

RECORD_FILE = "oppu.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_FILES = (CONFIG_FILE, WEIGHTS_FILE)
RUN_FILE = "run.json"  # in a folder of adapters: what the train-users runs on it did, per user


class AdapterBaseMismatchError(ValueError):
    """An adapter is being loaded onto a base model other than the one it was trained on."""


class AdapterSettingMismatchError(ValueError):
    """An adapter is used with prompts of another k / profile / history format than it was trained with."""


class AdapterNotFoundError(FileNotFoundError):
    """No complete adapter exists where one was expected."""


class AdapterCorruptError(ValueError):
    """An adapter folder whose files do not verify: missing, unparseable, inconsistent or not the saved weights."""


class AdapterMismatchError(ValueError):
    """An adapter folder holds the adapter of another user or task than the one requested."""


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
        weights_sha256: sha256 of ``adapter_model.safetensors``, recorded by :meth:`save`; ``None`` in records
            written before it existed (those verify by the safetensors header and shapes only).
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
    oppu_hub_version: str = __version__
    weights_sha256: str | None = None

    def save(self, folder: str | Path) -> Path:
        """Write ``oppu.json`` into ``folder``, recording the sha256 of the weights saved there (save them first)."""
        weights = Path(folder) / WEIGHTS_FILE
        if weights.is_file():
            self.weights_sha256 = file_sha256(weights)
        return write_json(Path(folder) / RECORD_FILE, dataclasses.asdict(self))

    @classmethod
    def from_folder(cls, folder: str | Path) -> AdapterRecord:
        """The record in ``folder``; :class:`AdapterCorruptError` when it is not a JSON object with the required
        fields (strings)."""
        path = Path(folder) / RECORD_FILE
        if not path.exists():
            raise AdapterNotFoundError(f"{folder} has no {RECORD_FILE}: not an oppu-hub adapter folder")
        data = _read_object(path)
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        bad = [name for name in required if not isinstance(data.get(name), str) or not data[name]]
        if bad:
            raise AdapterCorruptError(f"{path}: missing or empty {', '.join(bad)}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def verify_adapter(folder: str | Path, *, user_id: str | None = None, task: str | None = None) -> AdapterRecord:
    """The record of the finished adapter in ``folder``, once its files verify: all present, ``oppu.json`` a
    record, ``adapter_config.json`` a JSON object of the record's PEFT type, the safetensors header readable with
    tensor shapes that fit the config (LoRA: ``lora_A`` is ``(r, in)``, ``lora_B`` is ``(out, r)``), and the
    weights' sha256 the one recorded at save time (when recorded). Raises :class:`AdapterNotFoundError` for no
    folder, :class:`AdapterCorruptError` naming the folder and the fault, and :class:`AdapterMismatchError` when
    the record is of another ``user_id`` or ``task`` (compared by canonical name) than requested (checked before
    the PEFT files: another user's adapter is never taken for a broken one of this user)."""
    folder = Path(folder)
    if not folder.exists():
        raise AdapterNotFoundError(f"no complete adapter in {folder}: no such folder")
    missing = [name for name in (*PEFT_FILES, RECORD_FILE) if not (folder / name).is_file()]
    if missing:
        raise AdapterCorruptError(f"{folder}: not a complete adapter folder (missing {', '.join(missing)})")
    record = AdapterRecord.from_folder(folder)
    _check_identity(folder, record, user_id, task)
    config = _read_object(folder / CONFIG_FILE)
    if str(config.get("peft_type")) != record.peft_type:
        raise AdapterCorruptError(f"{folder}: {CONFIG_FILE} is of PEFT type {config.get('peft_type')!r}, "
                                  f"{RECORD_FILE} says {record.peft_type!r}")
    _check_weights(folder, config, record)
    return record


def is_complete(folder: str | Path, *, user_id: str | None = None, task: str | None = None) -> bool:
    """Whether ``folder`` holds a finished adapter (of ``user_id`` / ``task`` when given): one that
    :func:`verify_adapter` accepts."""
    try:
        verify_adapter(folder, user_id=user_id, task=task)
    except (AdapterNotFoundError, AdapterCorruptError, AdapterMismatchError):
        return False
    return True


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file, computed once per version of the file (its inode, size and mtime), except while
    the file is fresh: a rewrite within one tick of the file system's clock keeps its mtime."""
    st = Path(path).stat()
    if time.time_ns() - st.st_mtime_ns < _FRESH_NS:
        return sha256_file(str(path))
    return _cached_hash(str(path), st.st_ino, st.st_size, st.st_mtime_ns)


_FRESH_NS = 2_000_000_000  # files modified this recently are hashed again on every call


@functools.lru_cache(maxsize=4096)
def _cached_hash(path: str, *_version: int) -> str:
    return sha256_file(path)


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`AdapterCorruptError` naming the file otherwise."""
    try:
        data = read_json(path)
    except ValueError as e:
        raise AdapterCorruptError(str(e)) from None
    if not isinstance(data, dict):
        raise AdapterCorruptError(f"{path}: not a JSON object")
    return data


def _check_weights(folder: Path, config: dict[str, Any], record: AdapterRecord) -> None:
    """The safetensors header parses, its shapes fit ``config`` and the file is the one ``record`` hashed."""
    path = folder / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="numpy") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError (and OSError)
        raise AdapterCorruptError(f"{folder}: {WEIGHTS_FILE} is not a readable safetensors file ({e})") from None
    if not shapes:
        raise AdapterCorruptError(f"{folder}: {WEIGHTS_FILE} holds no tensors")
    fault = _lora_fault(shapes, config) if record.peft_type == "LORA" else None
    if fault:
        raise AdapterCorruptError(f"{folder}: {WEIGHTS_FILE} does not fit {CONFIG_FILE}: {fault}")
    if record.weights_sha256 and file_sha256(path) != record.weights_sha256:
        raise AdapterCorruptError(f"{folder}: {WEIGHTS_FILE} is not the file saved with this adapter "
                                  f"(its sha256 differs from the one in {RECORD_FILE})")


def _lora_fault(shapes: dict[str, tuple[int, ...]], config: dict[str, Any]) -> str | None:
    """What is wrong with LoRA weights of these shapes under ``config``: each ``lora_A`` (r, in) with its
    ``lora_B`` (out, r), r the config's (unless a ``rank_pattern`` sets ranks per module); ``None`` if nothing."""
    pairs = {name[: -len(".lora_A.weight")] for name in shapes if name.endswith(".lora_A.weight")}
    for module in sorted(pairs):
        a, b = shapes[f"{module}.lora_A.weight"], shapes.get(f"{module}.lora_B.weight")
        if b is None:
            return f"{module} has lora_A but no lora_B"
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            return f"{module}: lora_A {a} and lora_B {b} are not (r, in) and (out, r)"
        if not config.get("rank_pattern") and a[0] != config.get("r"):
            return f"{module}: rank {a[0]}, the config's r is {config.get('r')}"
    orphans = [n for n in shapes if n.endswith(".lora_B.weight") and n[: -len(".lora_B.weight")] not in pairs]
    return f"{orphans[0]} has no lora_A" if orphans else None


def _check_identity(folder: Path, record: AdapterRecord, user_id: str | None, task: str | None) -> None:
    """:class:`AdapterMismatchError` unless ``record`` is of ``user_id`` and ``task`` (when given)."""
    if user_id is not None and record.user_id != user_id:
        raise AdapterMismatchError(f"{folder} holds the adapter of user {record.user_id!r}, not of {user_id!r}")
    if task is not None:
        want, have = get_task(task).name, record.task
        with contextlib.suppress(UnknownTaskError):
            have = get_task(have).name
        if have != want:
            raise AdapterMismatchError(f"{folder} holds a {record.task} adapter, not a {want} one")


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
    ``[A-Za-z0-9_-]``; a short hash of the id keeps changed names distinct (:func:`~oppu_hub.io.keeps_name`)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", user_id).strip("_") or "user"
    if keeps_name(user_id, name, sep="_"):
        return name
    return f"{name[:55]}_{name_digest(user_id)}"


def check_base(record: AdapterRecord, base_fingerprint: str, *, where: str = "") -> None:
    """Raise :class:`AdapterBaseMismatchError` unless the adapter was trained on this base."""
    if record.base_fingerprint != base_fingerprint:
        quantized = bool(record.training.get("load_in_4bit"))
        raise AdapterBaseMismatchError(
            f"adapter {where or record.user_id!r} was trained on base {record.base_model!r} "
            f"(fingerprint {record.base_fingerprint}{', quantized to NF4' if quantized else ''}) but the loaded "
            f"base has fingerprint {base_fingerprint}; load the base it was trained on"
            f"{' with --load_in_4bit' if quantized else ''}")


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
