"""Inference: batched greedy generation on one shared base with users' adapters loaded on demand (LRU),
``predict`` which answers a split's queries for a method (base, +retrieval, +profile, +adapter), and
``save_predictions`` which writes them as a LaMP-format file and scores them."""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .adapters import (
    AdapterNotFoundError,
    AdapterRecord,
    adapter_identity,
    adapter_name,
    check_base,
    check_setting,
    is_complete,
)
from .data import LampSplit, item_keys, load_task_split, query_keys, write_predictions
from .io import safe_name
from .metrics import score
from .models import BaseModelConfig, load_base, model_fingerprint
from .profiles import ProfileStore
from .prompts import PromptBuilder, query_prompt
from .retrieval import RandomHistory
from .tasks import Task, get_task

logger = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


class Generator:
    """Greedy generation for many users on one base.

    Adapters are loaded on demand (``load``) and at most ``max_adapters`` stay resident (least recently used
    are deleted). A batch may mix users: LoRA adapters run in one ``generate`` call with peft's
    ``adapter_names``; other PEFT types are run one adapter group at a time.
    """

    def __init__(self, model: Any, tokenizer: Any, max_adapters: int = 16) -> None:
        self.base = model
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.max_adapters = max_adapters
        self.fingerprint = model_fingerprint(model)
        self._resident: OrderedDict[str, str] = OrderedDict()  # adapter name -> adapter_identity(folder)
        self._peft_type: str | None = None

    def load(self, folder: str | Path, name: str | None = None) -> str:
        """Make the adapter in ``folder`` resident (checking it belongs to this base); returns its name.

        Residency is keyed on the adapter's identity (:func:`adapter_identity`), not its name: another folder,
        or the same folder with new weights (``--update``, a new Hub revision), replaces the resident copy."""
        from peft import PeftModel

        folder = Path(folder)
        if not is_complete(folder):
            raise AdapterNotFoundError(f"no complete adapter in {folder}")
        name = name or adapter_name(folder.name)
        identity = adapter_identity(folder)
        if self._resident.get(name) == identity:
            self._resident.move_to_end(name)
            return name
        record = AdapterRecord.from_folder(folder)
        check_base(record, self.fingerprint, where=str(folder))
        if self._peft_type not in (None, record.peft_type):
            raise ValueError(f"{folder}: a {record.peft_type} adapter cannot join the resident {self._peft_type} "
                             f"adapters in one batch; predict each PEFT type separately")
        if name in self._resident:  # stale weights under this name
            self._evict(name)
        if self.model is self.base:
            self.model = PeftModel.from_pretrained(self.base, folder, adapter_name=name)
            self.model.eval()
        else:
            self.model.load_adapter(folder, adapter_name=name)
        self._peft_type = record.peft_type
        self._resident[name] = identity
        while len(self._resident) > self.max_adapters:
            self._evict(next(iter(self._resident)))
        return name

    def _evict(self, name: str) -> None:
        """Delete a resident adapter; the last one leaves the plain base behind (peft keeps at least one)."""
        del self._resident[name]
        if self._resident:
            with warnings.catch_warnings():  # peft re-activates another adapter; rows choose theirs in generate()
                warnings.filterwarnings("ignore", message=r"Adapter .* was active which is now deleted")
                self.model.delete_adapter(name)
            return
        if self._peft_type != "PROMPT_TUNING":  # remove the injected layers; prompt tuning injects none
            self.model.unload()
        self.model, self._peft_type = self.base, None

    @property
    def resident(self) -> list[str]:
        return list(self._resident)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], adapters: Sequence[str | None] | None = None,
                 max_new_tokens: int = 16, batch_size: int = 8) -> list[str]:
        """Greedy completions of ``prompts``; ``adapters[i]`` names row i's adapter (``None``: the base)."""
        adapters = list(adapters) if adapters is not None else [None] * len(prompts)
        outputs: list[str] = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            for i, text in zip(rows, self._generate_rows([prompts[i] for i in rows], [adapters[i] for i in rows],
                                                         max_new_tokens), strict=True):
                outputs[i] = text
        return outputs

    def _generate_rows(self, prompts: list[str], adapters: list[str | None], max_new_tokens: int) -> list[str]:
        if self.model is self.base or self._peft_type == "LORA":
            names = None if self.model is self.base else [a or BASE_ADAPTER for a in adapters]
            return self._run(prompts, max_new_tokens, adapter_names=names)
        out: list[str] = [""] * len(prompts)
        for name in dict.fromkeys(adapters):
            idx = [i for i, a in enumerate(adapters) if a == name]
            if name is None:
                with self.model.disable_adapter():
                    texts = self._run([prompts[i] for i in idx], max_new_tokens)
            else:
                self.model.set_adapter(name)
                texts = self._run([prompts[i] for i in idx], max_new_tokens)
            for i, t in zip(idx, texts, strict=True):
                out[i] = t
        return out

    def _run(self, prompts: list[str], max_new_tokens: int, **kwargs: Any) -> list[str]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.base.device)
        generated = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        new = generated[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def clean_answer(task: Task, text: str) -> str:
    """What goes into a prediction file: the parsed label, or the raw (first-line) text if none parses."""
    parsed = task.parse_output(text)
    return parsed if parsed is not None else text.strip().splitlines()[0] if text.strip() else ""


@dataclass
class PredictConfig:
    """Predictions for one method (``oppu-hub predict``).

    Args:
        task / data_dir / split: which queries.
        base_dir: the task-adapted base (or any base model).
        adapters_dir: users' adapters (``train-users`` output folder); omit for no adapters (non-personalized).
        k: BM25-retrieved history items in each prompt.
        profile: put the user's profile text in each prompt.
        random_history: fill the ``k`` history slots with random items of other users (the baseline).
        history_format: the history format the adapters must have been trained with (``full``/``input``/``output``).
        allow_setting_mismatch: use adapters trained with another k / profile / history format than requested
            (refused by default: each method pairs with adapters trained the same way).
        users / max_users: restrict to these users / the first N users.
        output: prediction file (LaMP format); default ``{base_dir}/predictions/...``.
        batch_size: prompts per ``generate`` call.
        max_adapters: resident adapters at most (LRU).
    """

    task: str = field(default="LaMP-2N", metadata={"help": "LaMP task"})
    data_dir: str = field(default="data", metadata={"help": "LaMP-format data folder"})
    split: str = field(default="test", metadata={"help": "split to predict: test | dev | train"})
    base_dir: str = field(default="runs/base/LaMP-2N/k0", metadata={"help": "base model folder or id"})
    adapters_dir: str | None = field(default=None, metadata={"help": "folder of users' adapters (OPPU)"})
    k: int = field(default=0, metadata={"help": "BM25-retrieved history items in the prompt"})
    profile: bool = field(default=False, metadata={"help": "put the user's profile in the prompt"})
    profiles_dir: str = field(default="runs/profiles", metadata={"help": "profile cache"})
    random_history: bool = field(default=False, metadata={"help": "k random items of other users instead"})
    history_format: str = field(default="full", metadata={"help": "history format the adapters were trained with"})
    allow_setting_mismatch: bool = field(default=False, metadata={
        "help": "use adapters trained with another k/profile/history format than requested"})
    users: list[str] | None = field(default=None, metadata={"help": "only these user ids"})
    max_users: int | None = field(default=None, metadata={"help": "only the first N users"})
    output: str | None = field(default=None, metadata={"help": "prediction file to write (LaMP format)"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    max_prompt_length: int = field(default=384, metadata={"help": "token budget of one prompt"})
    max_adapters: int = field(default=16, metadata={"help": "resident adapters at most (LRU)"})
    seed: int = field(default=0, metadata={"help": "seed of the random-history baseline"})

    def __post_init__(self) -> None:
        self.task = get_task(self.task).name  # canonical, and an unknown task fails here


def build_prompts(config: PredictConfig, split: LampSplit, users: Sequence[str], tokenizer: Any
                  ) -> tuple[list[str], list[str], list[str]]:
    """(question ids, their user ids, their prompts) for ``users`` under ``config``'s method."""
    task = split.task
    builder = PromptBuilder(task, tokenizer, config.max_prompt_length)
    profiles = ProfileStore(config.profiles_dir, task) if config.profile else None
    randomizer = RandomHistory({u: split.user_history(u) for u in split.user_ids}, config.seed,
                               keys=lambda item: item_keys(task, item)) if config.random_history else None
    ids, owners, prompts = [], [], []
    for user in users:
        profile = profiles.get(user) if profiles else None
        for q in split.user_questions(user):
            retrieved = randomizer.sample(user, config.k, q.id, query_keys(task, [q])) if randomizer else None
            ids.append(q.id)
            owners.append(user)
            prompts.append(query_prompt(builder, q, q.profile, config.k, profile, retrieved))
    return ids, owners, prompts


def predict(config: PredictConfig, generator: Generator | None = None) -> dict[str, str]:
    """Predict every query of the chosen users: ``{question id: answer}`` (:func:`save_predictions` writes and
    scores them)."""
    split = load_task_split(config.data_dir, config.task, config.split)
    task = split.task
    users = split.select_users(config.users, config.max_users)
    if generator is None:
        generator = Generator(*load_base(BaseModelConfig(config.base_dir)), max_adapters=config.max_adapters)
    ids, owners, prompts = build_prompts(config, split, users, generator.tokenizer)
    if config.adapters_dir:
        folders = adapter_folders(config, users)
        texts = _generate_by_user_groups(generator, folders, owners, prompts, task, config)
    else:
        texts = generator.generate(prompts, None, task.max_new_tokens, config.batch_size)
    return {i: clean_answer(task, t) for i, t in zip(ids, texts, strict=True)}


def adapter_folders(config: PredictConfig, users: Sequence[str]) -> dict[str, Path]:
    """Each user's adapter folder under ``config.adapters_dir``; every one must be complete and, unless
    ``allow_setting_mismatch``, trained with the requested k / profile / history format."""
    folders = {u: Path(config.adapters_dir or "") / safe_name(u) for u in users}
    missing = [u for u, f in folders.items() if not is_complete(f)]
    if missing:
        raise AdapterNotFoundError(f"no adapter for users {missing[:5]} in {config.adapters_dir}; "
                                   f"train them with oppu-hub train-users")
    if not config.allow_setting_mismatch:
        for folder in folders.values():
            check_setting(AdapterRecord.from_folder(folder), k=config.k, profile=config.profile,
                          history_format=config.history_format, where=str(folder))
    return folders


def save_predictions(config: PredictConfig, predictions: dict[str, str]) -> tuple[Path, dict[str, float] | None]:
    """Write ``predictions`` as a LaMP file (``config.output`` or a name saying the method) and score them
    against the split's golds when it has them (``None`` otherwise)."""
    split = load_task_split(config.data_dir, config.task, config.split)
    task = split.task
    path = Path(config.output) if config.output else Path(config.base_dir) / "predictions" / (
        f"{task.name}-{config.split}-k{config.k}{'-profile' if config.profile else ''}"
        f"{'-random' if config.random_history else ''}{'-oppu' if config.adapters_dir else ''}.json")
    write_predictions(task, predictions, path)
    golds = {q.id: q.gold for q in split.questions if q.id in predictions and q.gold is not None}
    return path, (score(task, predictions, golds) if golds else None)


def _generate_by_user_groups(generator: Generator, folders: dict[str, Path], owners: list[str],
                             prompts: list[str], task: Task, config: PredictConfig) -> list[str]:
    """Generate in groups of at most ``max_adapters`` users, so each group's adapters are all resident."""
    users = list(folders)
    outputs = [""] * len(prompts)
    step = max(1, generator.max_adapters)
    for start in tqdm(range(0, len(users), step), desc=f"predict {task.name}", unit="group",
                      disable=len(users) <= step):
        group = set(users[start:start + step])
        names = {u: generator.load(folders[u], adapter_name(u)) for u in group}
        rows = [i for i, u in enumerate(owners) if u in group]
        texts = generator.generate([prompts[i] for i in rows], [names[owners[i]] for i in rows],
                                   task.max_new_tokens, config.batch_size)
        for i, t in zip(rows, texts, strict=True):
            outputs[i] = t
    return outputs
