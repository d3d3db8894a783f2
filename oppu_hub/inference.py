"""Inference: batched greedy generation on one shared base with users' adapters loaded on demand (LRU),
``predict`` which answers a split's queries for a method (base, +retrieval, +profile, +adapter), and
``save_predictions`` which writes them as a LaMP-format file and scores them."""

from __future__ import annotations

import logging
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import LogitsProcessorList

from trainers.peft_types import peft_method

from .adapters import (
    AdapterNotFoundError,
    AdapterRecord,
    adapter_identity,
    adapter_name,
    check_base,
    check_setting,
    verify_adapter,
)
from .data import LampSplit, item_keys, load_task_split, query_keys, write_predictions
from .decoding import ContrastiveLogitsProcessor
from .io import make_private_dirs, safe_name
from .label_scoring import best_labels, label_logprobs
from .lora_bank import BASE_ADAPTER, LoraBank, unsupported
from .metrics import score
from .models import BaseModelConfig, load_base, model_fingerprint
from .predict_config import PredictConfig
from .priors import calibrated, global_prior, user_prior
from .profiles import ProfileStore
from .prompts import PromptBuilder, query_prompt
from .retrieval import RandomHistory
from .store import open_store
from .store_base import AdapterStore
from .tasks import Task

logger = logging.getLogger(__name__)

LoraBackend = Literal["gathered", "peft"]
GATHERED = "LORA (gathered)"  # the kind of adapters resident in the Generator's LoraBank


def load_adapter(model: Any, folder: str | Path, name: str = "default", *, base_fingerprint: str | None = None,
                 where: str | None = None, is_trainable: bool = False, check: bool = True) -> Any:
    """Load the adapter in ``folder`` onto ``model`` under ``name`` and return the ``PeftModel``: a ``PeftModel``
    gets the adapter added (``load_adapter``), a plain model is wrapped. The folder must verify and its
    ``oppu.json`` name the loaded base (``base_fingerprint``, default :func:`~oppu_hub.models.model_fingerprint`
    of ``model``), else :class:`~oppu_hub.adapters.AdapterBaseMismatchError` naming ``where`` (default the
    folder); ``check=False``: the caller has checked that already (:func:`checked_adapter`)."""
    if check:
        checked_adapter(folder, base_fingerprint or model_fingerprint(model), where=where)
    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=name, is_trainable=is_trainable)
        return model
    return PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=is_trainable)


def checked_adapter(folder: str | Path, base_fingerprint: str, *, where: str | None = None) -> AdapterRecord:
    """The record of the adapter in ``folder`` once it verifies (:func:`~oppu_hub.adapters.verify_adapter`) and
    was trained on the base of ``base_fingerprint`` (:func:`~oppu_hub.adapters.check_base`)."""
    record = verify_adapter(folder)
    check_base(record, base_fingerprint, where=where or str(folder))
    return record


def load_user_adapter(model: Any, store: AdapterStore | str | None, repo_id_or_path: str | os.PathLike[str],
                      revision: str | None = None, adapter_name: str = "default", *,
                      base_fingerprint: str | None = None, is_trainable: bool = False) -> Any:
    """Load a user's adapter onto ``model`` under ``adapter_name`` (:func:`load_adapter`) and return the
    ``PeftModel``. ``repo_id_or_path`` is an adapter folder or a repo of ``store`` (a spec or store:
    :func:`~oppu_hub.store.open_store`) pulled at ``revision``; the pull checks that the repo holds the user and
    task its name stands for."""
    local = Path(repo_id_or_path)
    if local.is_dir():
        return load_adapter(model, local, adapter_name, base_fingerprint=base_fingerprint, is_trainable=is_trainable)
    folder = open_store(store).pull(str(repo_id_or_path), revision)
    return load_adapter(model, folder, adapter_name, base_fingerprint=base_fingerprint,
                        where=f"{repo_id_or_path}@{revision or 'main'}", is_trainable=is_trainable)


class Generator:
    """Greedy generation for many users on one base.

    Adapters are loaded on demand (``load``) and at most ``max_adapters`` stay resident (least recently used
    are deleted). A batch may mix users: LoRA adapters run in one ``generate`` call, each row with its own
    adapter; other PEFT types are run one adapter group at a time. ``lora_backend``: ``"gathered"`` serves LoRA
    adapters from a :class:`~oppu_hub.lora_bank.LoraBank` (one gathered low-rank product per layer; adapters it
    cannot hold, and any base that is itself a ``PeftModel``, fall back to peft), ``"peft"`` with peft's
    ``adapter_names``.
    """

    def __init__(self, model: Any, tokenizer: Any, max_adapters: int = 16,
                 lora_backend: LoraBackend = "gathered") -> None:
        self.base = model
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.max_adapters = max_adapters
        self.fingerprint = model_fingerprint(model)
        self._resident: OrderedDict[str, str] = OrderedDict()  # adapter name -> adapter_identity(folder)
        self._peft_type: str | None = None  # of the resident adapters; "LORA (gathered)" in the bank
        self._bank = LoraBank(model, max_adapters + 1) if lora_backend == "gathered" and not isinstance(
            model, PeftModel) else None

    def load(self, folder: str | Path, name: str | None = None) -> str:
        """Make the adapter in ``folder`` resident (checking that it verifies and belongs to this base); returns its
        name.

        Residency is keyed on the adapter's identity (:func:`adapter_identity`), not its name: another folder,
        or the same folder with new weights (``--update``, a new Hub revision), replaces the resident copy."""
        folder = Path(folder)
        record = checked_adapter(folder, self.fingerprint)
        name = name or adapter_name(folder.name)
        identity = adapter_identity(folder)
        if self._resident.get(name) == identity:
            self._resident.move_to_end(name)
            return name
        bankable = self._bank is not None and self._peft_type in (None, GATHERED) and unsupported(
            folder, self.base) is None  # beside adapters peft holds, a LoRA joins them in peft
        kind = GATHERED if bankable else record.peft_type
        if self._peft_type not in (None, kind):
            raise ValueError(f"{folder}: a {kind} adapter cannot join the resident {self._peft_type} adapters in one "
                             f"batch; predict each kind separately")
        if name in self._resident:  # stale weights under this name
            self._evict(name)
        if kind == GATHERED:
            self._bank.add(name, folder)
            self.model = self._bank
        else:
            self.model = load_adapter(self.model, folder, name, check=False)  # checked above; in eval mode
        self._peft_type = kind
        self._resident[name] = identity
        while len(self._resident) > self.max_adapters:
            self._evict(next(iter(self._resident)))
        return name

    def close(self) -> None:
        """Delete every resident adapter: the base is as it came."""
        while self._resident:
            self._evict(next(iter(self._resident)))

    def _evict(self, name: str) -> None:
        """Delete a resident adapter; the last one leaves the plain base behind (peft keeps at least one)."""
        del self._resident[name]
        if self._peft_type == GATHERED:
            self._bank.remove(name)
            if not self._resident:
                self._bank.close()
                self.model, self._peft_type = self.base, None
            return
        if self._resident:
            with warnings.catch_warnings():  # peft re-activates another adapter; rows choose theirs in generate()
                warnings.filterwarnings("ignore", message=r"Adapter .* was active which is now deleted")
                self.model.delete_adapter(name)
            return
        if not peft_method(self._peft_type).prompt_learning:  # unload the injected layers (prompt tuning has none)
            self.model.unload()
        self.model, self._peft_type = self.base, None

    @property
    def resident(self) -> list[str]:
        return list(self._resident)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], adapters: Sequence[str | None] | None = None,
                 max_new_tokens: int = 16, batch_size: int = 8, contrast: tuple[float, float] | None = None
                 ) -> list[str]:
        """Greedy completions of ``prompts``; ``adapters[i]`` names row i's adapter (``None``: the base).
        ``contrast=(alpha, beta)``: contrastive personal decoding of each adapter against the base
        (:mod:`oppu_hub.decoding`; LoRA adapters, which share one mixed batch with the base rows)."""
        def run(rows: list[str], names: list[str] | None) -> list[str]:
            if contrast is None or names is None:
                return self._run(rows, max_new_tokens, adapter_names=names)
            processor = ContrastiveLogitsProcessor(len(rows), *contrast)
            both = self._run(rows + rows, max_new_tokens, adapter_names=names + [BASE_ADAPTER] * len(rows),
                             logits_processor=LogitsProcessorList([processor]))
            return both[:len(rows)]

        if contrast is not None and not self._mixed_batches:
            raise ValueError("contrastive decoding mixes adapter and base rows in one batch: LoRA adapters only")
        return self._batched(prompts, adapters, batch_size, run)

    @torch.inference_mode()
    def score_labels(self, prompts: Sequence[str], adapters: Sequence[str | None] | None, labels: Sequence[str],
                     batch_size: int = 8) -> torch.Tensor:
        """``(len(prompts), len(labels))`` summed log-likelihoods of each label after each prompt
        (:func:`oppu_hub.label_scoring.label_logprobs`), adapters as in :meth:`generate`."""
        def run(rows: list[str], names: list[str] | None) -> list[torch.Tensor]:
            return list(label_logprobs(self.model, self.tokenizer, rows, labels, names).cpu())

        return torch.stack(self._batched(prompts, adapters, batch_size, run))

    def _batched(self, prompts: Sequence[str], adapters: Sequence[str | None] | None, batch_size: int,
                 run: Callable[[list[str], list[str] | None], list[Any]]) -> list[Any]:
        """``run(prompts, peft adapter names or None)`` over batches of similar length, in the input's order."""
        adapters = list(adapters) if adapters is not None else [None] * len(prompts)
        outputs: list[Any] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            for i, out in zip(rows, self._by_adapter([prompts[i] for i in rows], [adapters[i] for i in rows], run),
                              strict=True):
                outputs[i] = out
        return outputs

    def _by_adapter(self, prompts: list[str], adapters: list[str | None],
                    run: Callable[[list[str], list[str] | None], list[Any]]) -> list[Any]:
        """One mixed batch for LoRA (``adapter_names``); other PEFT types one adapter group at a time."""
        if self._mixed_batches:
            return run(prompts, None if self.model is self.base else [a or BASE_ADAPTER for a in adapters])
        out: list[Any] = [None] * len(prompts)
        for name in dict.fromkeys(adapters):
            idx = [i for i, a in enumerate(adapters) if a == name]
            if name is None:
                with self.model.disable_adapter():
                    results = run([prompts[i] for i in idx], None)
            else:
                self.model.set_adapter(name)
                results = run([prompts[i] for i in idx], None)
            for i, r in zip(idx, results, strict=True):
                out[i] = r
        return out

    @property
    def _mixed_batches(self) -> bool:
        """Whether rows of different adapters (and the base) can share a batch."""
        return self._peft_type in (None, GATHERED) or peft_method(self._peft_type).mixed_batches

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
        generator = Generator(*load_base(BaseModelConfig(config.base_dir, load_in_4bit=config.load_in_4bit)),
                              max_adapters=config.max_adapters)
    ids, owners, prompts = build_prompts(config, split, users, generator.tokenizer)
    answer = answerer(config, split, generator)
    if config.adapters_dir:
        texts = _by_user_groups(generator, adapter_folders(config, users), owners, prompts, task, answer)
    else:
        texts = answer(prompts, None, owners)
    return {i: clean_answer(task, t) for i, t in zip(ids, texts, strict=True)}


Answerer = Callable[[list[str], list[str | None] | None, list[str]], list[str]]


def answerer(config: PredictConfig, split: LampSplit, generator: Generator) -> Answerer:
    """``answer(prompts, adapter names, owners)`` for ``config``'s decoding: generation (contrastive or not), or
    the task's best-scoring label (:meth:`Generator.score_labels`), shifted by the owner's label prior."""
    task = split.task
    if not (config.prior or (config.answers == "labels" and task.labels)):
        contrast = (config.contrast_alpha, config.contrast_beta) if config.contrastive else None
        return lambda prompts, names, owners: generator.generate(prompts, names, task.max_new_tokens,
                                                                 config.batch_size, contrast)
    labels = list(task.labels)
    if config.prior:
        train = load_task_split(config.data_dir, task, "train")
        prior = global_prior(labels, (task.parse_output(q.gold or "") for q in train.questions))
        history = {u: [task.parse_output(task.item_answer(i)) for i in split.user_history(u)] if task.has_pairs
                   else [] for u in split.user_ids}
        users = {u: user_prior(labels, history[u], prior, config.prior_smoothing) for u in split.user_ids}

    def answer(prompts: list[str], names: list[str | None] | None, owners: list[str]) -> list[str]:
        scores = generator.score_labels(prompts, names, labels, config.batch_size)
        if config.prior:
            scores = calibrated(scores, [users[o] for o in owners], prior, config.prior_weight)
        return best_labels(scores, labels)

    return answer


def adapter_folders(config: PredictConfig, users: Sequence[str]) -> dict[str, Path]:
    """Each user's adapter folder under ``config.adapters_dir``; every one must exist, verify
    (:func:`~oppu_hub.adapters.verify_adapter`: whole, intact, of this user and task) and, unless
    ``allow_setting_mismatch``, be trained with the requested k / profile / history format."""
    folders = {u: Path(config.adapters_dir or "") / safe_name(u) for u in users}
    missing = [u for u, f in folders.items() if not f.exists()]
    if missing:
        raise AdapterNotFoundError(f"no adapter for users {missing[:5]} in {config.adapters_dir}; "
                                   f"train them with oppu-hub train-users")
    for user, folder in folders.items():
        record = verify_adapter(folder, user_id=user, task=config.task)
        if not config.allow_setting_mismatch:
            check_setting(record, k=config.k, profile=config.profile, history_format=config.history_format,
                          where=str(folder))
    return folders


def save_predictions(config: PredictConfig, predictions: dict[str, str]) -> tuple[Path, dict[str, float] | None]:
    """Write ``predictions`` as a LaMP file (``config.output`` or a name saying the method) and score them
    against the split's golds when it has them (``None`` otherwise)."""
    split = load_task_split(config.data_dir, config.task, config.split)
    task = split.task
    path = Path(config.output) if config.output else Path(config.base_dir) / "predictions" / (
        f"{task.name}-{config.split}-k{config.k}{'-profile' if config.profile else ''}"
        f"{'-random' if config.random_history else ''}{'-oppu' if config.adapters_dir else ''}.json")
    make_private_dirs(path.parent)  # predictions are about users: new folders for them are owner-only
    write_predictions(task, predictions, path)
    golds = {q.id: q.gold for q in split.questions if q.id in predictions and q.gold is not None}
    return path, (score(task, predictions, golds) if golds else None)


def _by_user_groups(generator: Generator, folders: dict[str, Path], owners: list[str], prompts: list[str],
                    task: Task, answer: Answerer) -> list[str]:
    """Answer in groups of at most ``max_adapters`` users, so each group's adapters are all resident."""
    users = list(folders)
    outputs = [""] * len(prompts)
    step = max(1, generator.max_adapters)
    for start in tqdm(range(0, len(users), step), desc=f"predict {task.name}", unit="group",
                      disable=len(users) <= step):
        group = set(users[start:start + step])
        names = {u: generator.load(folders[u], adapter_name(u)) for u in group}
        rows = [i for i, u in enumerate(owners) if u in group]
        texts = answer([prompts[i] for i in rows], [names[owners[i]] for i in rows], [owners[i] for i in rows])
        for i, t in zip(rows, texts, strict=True):
            outputs[i] = t
    return outputs
