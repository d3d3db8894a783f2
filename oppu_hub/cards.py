"""Model cards for per-user adapter repos (``huggingface_hub.ModelCard``), the tags that make adapters findable
(``oppu``, ``lamp``, the task, the PEFT type, the user) and salted hashes of user ids for repos that must not
carry the raw id (LaMP user ids can be personal data)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .adapters import AdapterRecord

SALT_ENV = "OPPU_HUB_USER_SALT"
HASH_ENV = "OPPU_HUB_HASH_USER_IDS"
BASE_TAGS = ("oppu", "lamp")
USER_TAG_PREFIX = "user-"
# Local names of bases whose Hub id is known (the default base is converted from a GGUF copy of this model).
KNOWN_HUB_BASES = {"SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
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
    ``-``/``.``; a short hash is appended whenever anything had to change, so distinct ids stay distinct."""
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    s = re.sub(r"[-.]{2,}", "-", s).strip("-.") or "x"
    if s == text and len(s) <= max_len:
        return s
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{s[: max_len - 9].rstrip('-.')}-{digest}"


def task_tag(task: str) -> str:
    """``LaMP-2N`` -> ``lamp-2n``."""
    return slug(task.lower())


def peft_tag(peft_type: str) -> str:
    """``LORA`` -> ``lora``, ``PROMPT_TUNING`` -> ``prompt-tuning``."""
    return slug(peft_type.lower().replace("_", "-"))


def user_tag(label: str) -> str:
    return USER_TAG_PREFIX + slug(label)


def card_tags(record: AdapterRecord, label: str) -> list[str]:
    """``oppu``, ``lamp``, the task, the PEFT type and ``user-{label}``."""
    return [*BASE_TAGS, task_tag(record.task), peft_tag(record.peft_type), user_tag(label)]


def hub_base_model(name: str | None) -> str | None:
    """The Hub id of a base, or ``None`` when it is only a local folder (the Hub rejects non-ids there)."""
    if not name:
        return None
    name = KNOWN_HUB_BASES.get(name, name)
    if Path(name).exists() or not _HUB_ID.match(name):
        return None
    return name


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
    metrics = {k: float(v) for k, v in (record.metrics or {}).items() if isinstance(v, (int, float))}
    eval_results = [
        EvalResult(task_type="text-generation", task_name=record.task, dataset_type="LaMP", dataset_name=record.task,
                   dataset_split="test", metric_type=name, metric_name=name, metric_value=value)
        for name, value in sorted(metrics.items())
    ] or None
    data = ModelCardData(
        base_model=hub_base, library_name="peft", pipeline_tag="text-generation", tags=card_tags(record, label),
        model_name=repo_id.split("/")[-1] if eval_results else None, eval_results=eval_results,
    )
    base_line = f"`{hub_base}`" if hub_base else f"`{base_model or record.base_model}` (a local base, not on the Hub)"
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
    lines += [
        "", "## Usage", "",
        "```bash",
        f"hf download {repo_id} --local-dir adapter",
        "```", "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{load_base}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{load_base}")',
        f'model = PeftModel.from_pretrained(base, "{repo_id}")',
        "```", "",
        "With oppu-hub, which also checks that the adapter was trained on this exact base:", "",
        "```python",
        "from oppu_hub.store import load_user_adapter, open_store",
        "",
        f'model = load_user_adapter(base, open_store("hub:{repo_id.split("/")[0]}"), "{repo_id}")',
        "```",
        "",
        "Private by default: only the owner's token can list or download this repo.",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
