"""Leaderboard evaluation (``oppu-hub eval``): the paper's Table 2 methods on the test users of LaMP tasks.

Every method is a name ``{family}-k{k}``, or the name of a model-free baseline
(:mod:`oppu_hub.baselines`: ``majority``, ``user-majority``, ``bm25-copy``; "–" where a task has none):

=============  ====================================================  =====================================
family         what it is                                            base / adapters
=============  ====================================================  =====================================
``np``         non-personalized, no history (``np-k0``)              base task-adapted with k=0
``random``     ``k`` random history items of *other* users           base with k
``rag``        ``k`` BM25-retrieved items of the user's history      base with k
``pag``        the user's textual profile (+ ``k`` retrieved items)  base with k + profile
``pooled``     one adapter for all evaluated users, trained on       base with k, one adapter trained as
               their histories together (+ ``k`` retrieved items)    ``oppu-kN``'s on the pooled history
``oppu``       RAG+OPPU: the user's adapter, trained with ``k``      base with k, adapters trained with k
``pag-oppu``   PAG+OPPU: adapter trained with profile and ``k``      base with k + profile, same adapters
=============  ====================================================  =====================================

Trained artifacts are content-addressed: a base lives in ``{workdir}/base/{hash}/{task}/{variant}`` and adapters in
``{workdir}/users/{hash}/{task}/...``, where the hash covers the training configuration and the training data, so
a second run with the same settings trains nothing and a changed setting never reuses a stale model. Predictions
are written in LaMP's official format (with a matching ``golds.json``, and ``users.json`` naming each query's user)
and the printed scores are computed from those files, as are the table's paired bootstrap intervals
(:mod:`oppu_hub.stats`) of each method's difference to ``np-k0`` and to the RAG method with the smallest k.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .baselines import BASELINES, POOLED_USER, applies, pooled_split, predict_baseline
from .data import LampSplit, load_task_split, read_predictions, write_predictions, write_split
from .io import read_json, safe_name, write_json
from .metrics import score
from .models import DEFAULT_BASE
from .stats import LEVEL, Interval, PairedBootstrap
from .tasks import TASKS, Task, get_task
from .tuned import user_defaults

logger = logging.getLogger(__name__)

# Each family's column group; groups in the table's order (the paper's, with baselines first and the pooled
# control beside RAG+OPPU).
FAMILIES = {
    **dict.fromkeys(BASELINES, "Baselines"),
    "np": "Non-Personalized",
    "random": "Non-Personalized",
    "rag": "RAG",
    "pag": "PAG",
    "pooled": "Pooled",
    "oppu": "RAG+OPPU",
    "pag-oppu": "PAG+OPPU",
}
GROUP_ORDER = ("Baselines", "Non-Personalized", "RAG", "PAG", "Pooled", "RAG+OPPU", "PAG+OPPU")
TABLE2_METHODS = ("np-k0", "random-k1", "rag-k1", "rag-k2", "rag-k4", "pag-k0", "pag-k1",
                  "oppu-k0", "oppu-k1", "oppu-k2", "oppu-k4", "pag-oppu-k0", "pag-oppu-k1")
DEFAULT_METHODS = (*BASELINES, *TABLE2_METHODS, "pooled-k0", "pooled-k1")
SMALL_METHODS = ("np-k0", "random-k1", "rag-k1", "oppu-k0", "oppu-k1")
_METHOD = re.compile(r"(np|random|rag|pag-oppu|pag|pooled|oppu)-k(\d+)|(" + "|".join(map(re.escape, BASELINES)) + ")")


@dataclass(frozen=True)
class Method:
    """One column of the leaderboard (see the module docstring for the names; a baseline has ``k=0``)."""

    family: str
    k: int

    @property
    def name(self) -> str:
        return self.family if self.baseline else f"{self.family}-k{self.k}"

    @property
    def group(self) -> str:
        return FAMILIES[self.family]

    @property
    def label(self) -> str:
        if self.baseline:
            return self.family
        return f"random k={self.k}" if self.family == "random" else f"k={self.k}"

    @property
    def baseline(self) -> bool:
        """A model-free baseline (:mod:`oppu_hub.baselines`)."""
        return self.family in BASELINES

    @property
    def pooled(self) -> bool:
        """One adapter trained on all evaluated users' histories together (:meth:`Pipeline.pooled_adapter`)."""
        return self.family == "pooled"

    @property
    def profile(self) -> bool:
        return self.family in ("pag", "pag-oppu")

    @property
    def oppu(self) -> bool:
        return self.family in ("oppu", "pag-oppu")

    @property
    def random_history(self) -> bool:
        return self.family == "random"

    def sort_key(self) -> tuple[int, int, int]:
        within = BASELINES.index(self.family) if self.baseline else int(self.family == "random")
        return GROUP_ORDER.index(self.group), within, self.k


def parse_method(name: str | Method) -> Method:
    """``"rag-k2"`` -> ``Method("rag", 2)``, ``"majority"`` -> ``Method("majority", 0)``; raises ``ValueError``
    naming the known forms."""
    if isinstance(name, Method):
        return name
    match = _METHOD.fullmatch(str(name).strip().lower())
    if match is None:
        families = ", ".join(f for f in FAMILIES if f not in BASELINES)
        raise ValueError(f"unknown method {name!r}; expected a baseline ({', '.join(BASELINES)}) or FAMILY-kN with "
                         f"FAMILY one of {families} (e.g. {', '.join(SMALL_METHODS)})")
    if match.group(3):
        return Method(match.group(3), 0)
    method = Method(match.group(1), int(match.group(2)))
    if method.family == "np" and method.k != 0:
        raise ValueError(f"{name!r}: the non-personalized method has no history (use np-k0, rag-kN or random-kN)")
    if method.family == "random" and method.k == 0:
        raise ValueError(f"{name!r}: random history needs k >= 1")
    return method


@dataclass
class PipelineConfig:
    """How bases and adapters are trained and methods predicted (shared by ``eval`` and ``analyze``).

    Args:
        data_dir: LaMP-format data (``{data_dir}/{task}/{split}_questions.json``): rebuilt or official files.
        split: the split whose users are evaluated (``test``; ``dev`` for official LaMP, whose test golds are
            hidden).
        workdir: where bases, adapters, profiles, data views and predictions go (reused across runs).
        base_model: the pretrained base (and the LM that writes profiles).
        users: evaluated users per task (the first N of the split; 0 or none: all).
        train_users: training users used for task adaptation (the first N; none: all).
        base_examples / base_epochs / base_lr: task adaptation size and schedule.
        max_history / user_epochs / user_lr / target_modules / lora_r / lora_alpha: per-user adapter training;
            ``None`` takes the task's dev-tuned default (:mod:`oppu_hub.tuned`).
        peft_type: LORA, IA3 or PROMPT_TUNING for the user adapters.
        concurrent: LoRA users trained together over the shared base (equal to training each alone up to float
            summation order and the data shuffle; ``1`` is the sequential ``SFTTrainer`` path).
        profile_items / profile_tokens: history items shown to the profile writer and profile length.
    """

    data_dir: str = field(default="data", metadata={"help": "LaMP-format data folder"})
    split: str = field(default="test", metadata={"help": "evaluated split: test | dev"})
    workdir: str = field(default="runs/eval", metadata={"help": "bases, adapters, profiles, predictions"})
    base_model: str = field(default=DEFAULT_BASE, metadata={"help": "pretrained base (also writes profiles)"})
    users: int | None = field(default=3, metadata={"help": "evaluated users per task (first N; 0 = all)"})
    train_users: int | None = field(default=None, metadata={"help": "training users for task adaptation"})
    base_examples: int | None = field(default=64, metadata={"help": "task-adaptation examples (cap)"})
    base_epochs: float = field(default=1.0, metadata={"help": "task-adaptation epochs"})
    base_lr: float = field(default=5e-4, metadata={"help": "task-adaptation learning rate"})
    max_history: int | None = field(default=16, metadata={"help": "most recent history items per adapter"})
    user_epochs: float | None = field(default=None, metadata={"help": "user-adapter epochs (default: tuned)"})
    user_lr: float | None = field(default=None, metadata={"help": "user-adapter learning rate (default: tuned)"})
    peft_type: str = field(default="LORA", metadata={"help": "LORA | IA3 | PROMPT_TUNING"})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "modules the user adapters adapt, or all-linear (default: tuned)"})
    lora_r: int | None = field(default=None, metadata={"help": "user-adapter LoRA rank (default: tuned)"})
    lora_alpha: int | None = field(default=None, metadata={"help": "user-adapter LoRA alpha (default: = rank)"})
    concurrent: int = field(default=8, metadata={
        "help": "LoRA users trained together in one batch (trainers/concurrent.py); 1 trains them one by one"})
    batch_size: int = field(default=4, metadata={"help": "training batch size"})
    predict_batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    max_prompt_length: int = field(default=384, metadata={"help": "token budget of one prompt"})
    profile_items: int = field(default=8, metadata={"help": "history items shown to the profile writer"})
    profile_tokens: int = field(default=80, metadata={"help": "profile length in tokens"})
    precision: str = field(default="auto", metadata={"help": "auto | bf16 | fp32"})
    seed: int = field(default=42, metadata={"help": "training seed"})


@dataclass
class EvalConfig(PipelineConfig):
    """The leaderboard (``oppu-hub eval``).

    Args:
        tasks: tasks to evaluate (rows of the table).
        methods: methods to run (columns), e.g. ``np-k0 rag-k1 oppu-k1`` (default: the baselines, the paper's
            Table 2 and ``pooled-k0``/``pooled-k1``).
        out_dir: where ``leaderboard.{md,csv,json}`` go (default ``{workdir}/results``).
        resamples / bootstrap_seed: the paired bootstrap over users behind the table's confidence intervals.
    """

    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "tasks to evaluate"})
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS),
                               metadata={"help": "methods (columns): majority user-majority bm25-copy np-k0 "
                                                 "random-kN rag-kN pag-kN pooled-kN oppu-kN pag-oppu-kN"})
    out_dir: str | None = field(default=None, metadata={"help": "table folder (default {workdir}/results)"})
    resamples: int = field(default=1000, metadata={"help": "bootstrap resamples of the users (confidence intervals)"})
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the bootstrap resamples"})


def config_hash(obj: Any, n: int = 12) -> str:
    """A short stable hash of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def file_hash(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


HistoryFilter = Callable[[LampSplit], LampSplit]


class Pipeline:
    """Train-or-reuse and predict for one task.

    Args:
        config: the pipeline settings.
        task: the task.
        history_filter: optionally rewrites the evaluated split's histories (e.g. keep only least relevant
            items); ``history_tag`` names it, so adapters trained on filtered histories get their own folder.
        on_train: called with ``("base"|"users", folder)`` whenever something is actually trained.
    """

    def __init__(self, config: PipelineConfig, task: str | Task, history_filter: HistoryFilter | None = None,
                 history_tag: str = "", on_train: Callable[[str, Path], None] | None = None) -> None:
        self.config = config
        self.task = get_task(task)
        self.work = Path(config.workdir)
        self.history_filter = history_filter
        self.history_tag = history_tag
        self.on_train = on_train
        self._view: Path | None = None
        self._eval_split: LampSplit | None = None
        self._bases: dict[tuple[int, bool], Path] = {}

    # --- data ------------------------------------------------------------------------------------------
    def source_files(self, split: str) -> tuple[Path, Path]:
        folder = Path(self.config.data_dir) / self.task.name
        return folder / f"{split}_questions.json", folder / f"{split}_outputs.json"

    def data_view(self) -> Path:
        """A data folder with the (capped) training users and the (filtered) evaluated split, written once under
        a name derived from its inputs."""
        if self._view is not None:
            return self._view
        c = self.config
        key = config_hash({"train": file_hash(*self.source_files("train")), "eval": file_hash(*self.source_files(
            c.split)), "train_users": c.train_users, "split": c.split, "history": self.history_tag})
        view = self.work / "views" / self.task.name / key
        if not (view / self.task.name / f"{c.split}_outputs.json").exists():  # the last file written
            train = load_task_split(c.data_dir, self.task, "train")
            if c.train_users:
                keep = set(train.user_ids[:c.train_users])
                train = LampSplit(self.task, [q for q in train.questions if q.user_id in keep])
            evaluated = load_task_split(c.data_dir, self.task, c.split)
            if not evaluated.has_golds:
                raise ValueError(f"{evaluated.source}: no gold outputs to score against (official LaMP test golds "
                                 f"are hidden: evaluate --split dev)")
            if self.history_filter is not None:
                evaluated = self.history_filter(evaluated)
            write_split(train, view / self.task.name, "train")
            write_split(evaluated, view / self.task.name, c.split)
        self._view = view
        return view

    def eval_split(self) -> LampSplit:
        if self._eval_split is None:
            self._eval_split = load_task_split(self.data_view(), self.task, self.config.split)
        return self._eval_split

    def users(self) -> list[str]:
        return self.eval_split().select_users(None, self.config.users or None)

    # --- profiles --------------------------------------------------------------------------------------
    def profiles_dir(self) -> Path:
        c = self.config
        return self.work / "profiles" / config_hash({"model": c.base_model, "items": c.profile_items,
                                                     "tokens": c.profile_tokens})

    def ensure_profiles(self) -> None:
        """Profiles of the training users (for the PAG base) and of the evaluated users (cached)."""
        from .profiles import ProfileConfig, generate_profiles

        c = self.config
        train = load_task_split(self.data_view(), self.task, "train")
        evaluated = self.eval_split()
        users = [(u, train.user_history(u)) for u in train.user_ids]
        users += [(u, evaluated.user_history(u)) for u in self.users()]
        generate_profiles(ProfileConfig(task=self.task.name, model=c.base_model, profiles_dir=str(self.profiles_dir()),
                                        num_items=c.profile_items, max_new_tokens=c.profile_tokens), users)

    def _profiles_hash(self, users: Sequence[str]) -> str:
        from .profiles import ProfileStore

        store = ProfileStore(self.profiles_dir(), self.task)
        return config_hash([store.get(u) for u in users])

    # --- training --------------------------------------------------------------------------------------
    def _training(self) -> dict[str, Any]:
        c = self.config
        return dict(task=self.task.name, data_dir=str(self.data_view()), max_prompt_length=c.max_prompt_length,
                    precision=c.precision, seed=c.seed, per_device_train_batch_size=c.batch_size,
                    profiles_dir=str(self.profiles_dir()))

    def user_training(self) -> dict[str, Any]:
        """The user-adapter settings: the config's where given, else the task's dev-tuned defaults."""
        c, tuned = self.config, user_defaults(self.task.name)
        r = c.lora_r or tuned.lora_r
        return dict(learning_rate=c.user_lr or tuned.learning_rate,
                    num_train_epochs=c.user_epochs or tuned.num_train_epochs,
                    target_modules=list(c.target_modules or tuned.target_modules), lora_r=r,
                    lora_alpha=c.lora_alpha or r)

    def base_dir(self, k: int, profile: bool = False) -> Path:
        """The task-adapted base for prompts with ``k`` items (and profile): reused when its hash exists."""
        if (k, profile) in self._bases:
            return self._bases[(k, profile)]
        from trainers import BaseTaskConfig, train_base

        c = self.config
        cfg = BaseTaskConfig(**self._training(), k=k, profile=profile, base_model=c.base_model,
                             max_examples=c.base_examples, num_train_epochs=c.base_epochs, learning_rate=c.base_lr)
        view = self.data_view() / self.task.name
        train_users = load_task_split(self.data_view(), self.task, "train").user_ids
        hashed = {**_hashable(cfg), "train_data": file_hash(view / "train_questions.json", view / "train_outputs.json"),
                  "profiles": self._profiles_hash(train_users) if profile else None}
        root = self.work / "base" / config_hash(hashed)
        cfg.output_dir = str(root)
        target = cfg.target_dir()
        if not (target / "oppu_base.json").exists():
            logger.info("training base %s", target)
            write_json(root / "eval_config.json", hashed)
            train_base(cfg)
            if self.on_train:
                self.on_train("base", target)
        self._bases[(k, profile)] = target
        return target

    def adapters_dir(self, k: int, profile: bool = False, peft_type: str | None = None,
                     history_format: str = "full") -> Path:
        """The evaluated users' adapters trained with ``k`` (and profile) on the matching base; users whose
        adapter exists are skipped, so only missing ones are trained."""
        c = self.config
        return self._train_adapters(k, profile, peft_type, history_format, self.data_view(), self.users(),
                                    c.max_history, {"eval_data": file_hash(*self.source_files(c.split))})

    def pooled_view(self) -> Path:
        """A data folder whose evaluated split has one user holding all evaluated users' histories (each cut to
        ``max_history``; :func:`oppu_hub.baselines.pooled_split`), written once under a name derived from its
        inputs."""
        c = self.config
        key = config_hash({"view": self.data_view().name, "users": self.users(), "max_history": c.max_history})
        view = self.work / "views" / self.task.name / f"pooled-{key}"
        if not (view / self.task.name / f"{c.split}_outputs.json").exists():
            write_split(pooled_split(self.eval_split(), self.users(), c.max_history), view / self.task.name, c.split)
        return view

    def pooled_adapter(self, k: int, peft_type: str | None = None, history_format: str = "full") -> Path:
        """The ``pooled-k{k}`` control: one adapter trained on all evaluated users' histories together
        (:meth:`pooled_view`), on the same base and with the same settings as ``oppu-k{k}``'s adapters."""
        view = self.pooled_view()
        pooled_data = file_hash(view / self.task.name / f"{self.config.split}_questions.json")
        out = self._train_adapters(k, False, peft_type, history_format, view, [POOLED_USER], None,
                                   {"pooled_data": pooled_data})
        return out / safe_name(POOLED_USER)

    def _train_adapters(self, k: int, profile: bool, peft_type: str | None, history_format: str, data_dir: Path,
                        users: list[str], max_history: int | None, data: dict[str, str]) -> Path:
        """Train the missing adapters of ``users`` of ``data_dir``'s evaluated split into a folder named by the
        hash of the adapter config, its base and ``data`` (what identifies the training data)."""
        from trainers import UserAdapterConfig, train_users

        from .adapters import is_complete

        c = self.config
        base = self.base_dir(k, profile)
        cfg = UserAdapterConfig(**{**self._training(), "data_dir": str(data_dir)}, k=k, profile=profile,
                                base_dir=str(base), split=c.split, users=users, max_history=max_history,
                                **self.user_training(), peft_type=peft_type or c.peft_type,
                                history_format=history_format, concurrent=c.concurrent)
        hashed = {**_hashable(cfg), "base": base.parent.parent.name, "history": self.history_tag, **data}
        root = self.work / "users" / config_hash(hashed)
        cfg.output_dir = str(root)
        out = cfg.adapters_dir()
        if all(is_complete(out / safe_name(u)) for u in cfg.users):
            return out
        write_json(root / "eval_config.json", hashed)
        report = train_users(cfg)
        if report.failed:
            raise RuntimeError(f"{self.task.name}: adapters failed for {report.failed}")
        timings_path = out / "timings.json"
        timings = read_json(timings_path) if timings_path.exists() else {}
        timings.update({u: report.seconds[u] for u in report.trained + report.updated})
        write_json(timings_path, timings)
        if self.on_train and (report.trained or report.updated):
            self.on_train("users", out)
        return out

    # --- prediction ------------------------------------------------------------------------------------
    def run(self, methods: Sequence[str | Method], out_dir: str | Path, *, peft_type: str | None = None,
            history_format: str = "full", name_suffix: str = "") -> list[dict[str, Any]]:
        """Train what is missing, predict every method on the evaluated users, write LaMP-format predictions
        (``{out_dir}/{task}/{method}.json``), ``golds.json`` and ``users.json`` (``{question id: user id}``, for
        the bootstrap); returns one row per method with the scores recomputed from the written file. A baseline
        the task does not define (:func:`oppu_hub.baselines.applies`) gets no row."""
        from .inference import Generator, PredictConfig, predict
        from .models import BaseModelConfig, load_base
        from .store import load_user_adapter

        methods = [parse_method(m) for m in methods]
        if any(m.profile for m in methods):
            self.ensure_profiles()
        plan = []
        for m in methods:
            if m.baseline:
                continue
            base = self.base_dir(m.k, m.profile)
            adapters = (self.pooled_adapter(m.k, peft_type, history_format) if m.pooled else
                        self.adapters_dir(m.k, m.profile, peft_type, history_format) if m.oppu else None)
            plan.append((m, base, adapters))
        users = self.users()
        split = self.eval_split()
        folder = Path(out_dir) / self.task.name
        golds = {q.id: q.gold for u in users for q in split.user_questions(u)}
        write_predictions(self.task, golds, folder / "golds.json")
        write_json(folder / "users.json", {q.id: u for u in users for q in split.user_questions(u)})

        def row(m: Method, path: Path, start: float, base: Path | None = None, adapters: Path | None = None
                ) -> dict[str, Any]:
            return {"task": self.task.name, "method": m.name + name_suffix,
                    "scores": score(self.task, read_predictions(path), golds), "predictions": str(path),
                    "golds": str(folder / "golds.json"), "query_users": str(folder / "users.json"),
                    "base": str(base) if base else None, "adapters": str(adapters) if adapters else None,
                    "predict_seconds": round(time.perf_counter() - start, 2)}

        rows = []
        baselines = [m for m in methods if m.baseline and applies(m.family, self.task)]
        if baselines:
            train = load_task_split(self.data_view(), self.task, "train")
            for m in baselines:
                start = time.perf_counter()
                path = write_predictions(self.task, predict_baseline(m.family, split, users, train),
                                         folder / f"{m.name}{name_suffix}.json")
                rows.append(row(m, path, start))
        generators: dict[tuple[Path, Path | None], Any] = {}
        for m, base, adapters in sorted(plan, key=lambda p: (str(p[1]), str(p[2]))):
            key = (base, adapters)
            if key not in generators:
                generators.clear()  # one model in memory at a time
                model, tokenizer = load_base(BaseModelConfig(str(base)))
                # The pooled adapter is part of the model that every user's queries share.
                generators[key] = Generator(load_user_adapter(model, None, adapters) if m.pooled else model, tokenizer)
            path = folder / f"{m.name}{name_suffix}.json"
            start = time.perf_counter()
            predict(PredictConfig(task=self.task.name, data_dir=str(self.data_view()), split=self.config.split,
                                  base_dir=str(base), adapters_dir=str(adapters) if m.oppu else None, k=m.k,
                                  profile=m.profile, profiles_dir=str(self.profiles_dir()),
                                  random_history=m.random_history, history_format=history_format,
                                  users=users, output=str(path),
                                  batch_size=self.config.predict_batch_size,
                                  max_prompt_length=self.config.max_prompt_length), generators[key])
            rows.append(row(m, path, start, base, adapters))
        generators.clear()
        order = {m.name + name_suffix: i for i, m in enumerate(methods)}
        return sorted(rows, key=lambda r: order[r["method"]])


_UNHASHED = {"output_dir", "overwrite", "logging_steps", "data_dir", "profiles_dir", "users", "max_users",
             "push_to_hub", "hub_store", "update", "base_dir"}


def _hashable(cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _UNHASHED}


# --- the table -------------------------------------------------------------------------------------------
def build_table(rows: Sequence[dict[str, Any]], *, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Table 2's layout from the result rows of :meth:`Pipeline.run` (``task``, ``method``, ``scores`` and the
    ``predictions`` / ``golds`` / ``query_users`` files it wrote).

    One column per method in the paper's order (baselines first); two rows per task (its two metrics), each with
    the evaluated queries and users (``n``), the best method(s) (lower is better for MAE and RMSE) and, under
    ``deltas[reference][method]``, the method's difference to each reference (``np-k0`` and the RAG method with the
    smallest k, when run) with a paired bootstrap confidence interval over users (:class:`PairedBootstrap`:
    ``resamples`` draws, ``seed``); ``significant`` says the interval excludes 0 on the better side.
    """
    methods = sorted({parse_method(r["method"]) for r in rows}, key=Method.sort_key)
    names = [m.name for m in methods]
    rag = next((m.name for m in methods if m.family == "rag"), None)  # methods are sorted: the smallest k
    references = [ref for ref in ("np-k0", rag) if ref in names]
    tasks = sorted({r["task"] for r in rows}, key=lambda t: list(TASKS).index(get_task(t).name))
    table_rows = []
    for name in tasks:
        task = get_task(name)
        by_method = {r["method"]: r for r in rows if r["task"] == name}
        first = next(iter(by_method.values()))
        boot = PairedBootstrap(task, read_predictions(first["golds"]), read_json(first["query_users"]), resamples, seed)
        sums = {m: boot.user_sums(read_predictions(r["predictions"])) for m, r in by_method.items()}
        intervals = {ref: {m: boot.compare(s, sums[ref]) for m, s in sums.items() if m != ref}
                     for ref in references if ref in sums}
        for metric in task.metric_names:
            scores = {m.name: by_method[m.name]["scores"][metric] for m in methods if m.name in by_method}
            values = {m: round(v, 4) for m, v in scores.items()}
            target = max(values.values()) if task.higher_is_better else min(values.values())
            deltas = {ref: {m: _delta(iv[metric], task.higher_is_better) for m, iv in per.items()}
                      for ref, per in intervals.items()}
            table_rows.append({"task": name, "metric": metric, "higher_is_better": task.higher_is_better,
                               "n": {"queries": boot.n_queries, "users": boot.n_users}, "scores": scores,
                               "best": [m for m, v in values.items() if v == target], "deltas": deltas})
    columns = [{"method": m.name, "group": m.group, "label": m.label} for m in methods]
    return {"columns": columns, "references": references,
            "bootstrap": {"resamples": resamples, "seed": seed, "level": LEVEL, "unit": "user"}, "rows": table_rows}


def _delta(interval: Interval, higher_is_better: bool) -> dict[str, Any]:
    return {"diff": interval.diff, "low": interval.low, "high": interval.high,
            "significant": interval.significant(higher_is_better)}


def _header(col: dict[str, str]) -> str:
    return f"{col['group']} {col['label']}"


def _delta_text(delta: dict[str, Any] | None) -> str:
    if delta is None:
        return ""
    text = f"{delta['diff']:+.3f}"
    if delta["low"] is not None:
        text += f" [{delta['low']:+.3f}, {delta['high']:+.3f}]"
    return f"**{text}**" if delta["significant"] else text


def format_markdown(table: dict[str, Any]) -> str:
    """The table in Markdown: per metric a score row (best in italics; ↑/↓ says which way is better, "–": not run
    or not defined) and one "Δ vs reference" row per reference with the 95% CIs, a significant gain in bold."""
    cols = table["columns"]
    lines = ["| task | metric | n (queries / users) | " + " | ".join(_header(c) for c in cols) + " |",
             "|---|---|---:|" + "---:|" * len(cols)]
    for row in table["rows"]:
        cells = []
        for c in cols:
            v = row["scores"].get(c["method"])
            text = "–" if v is None else f"{v:.3f}"
            cells.append(f"_{text}_" if c["method"] in row["best"] else text)
        arrow = "↑" if row["higher_is_better"] else "↓"
        n = f"{row['n']['queries']} / {row['n']['users']}"
        lines.append(f"| {row['task']} | {row['metric']} {arrow} | {n} | " + " | ".join(cells) + " |")
        for ref, deltas in row["deltas"].items():
            cells = [_delta_text(deltas.get(c["method"])) if c["method"] in row["scores"] else "–" for c in cols]
            lines.append(f"|  | Δ vs {ref} |  | " + " | ".join(cells) + " |")
    boot = table["bootstrap"]
    lines += ["", f"Δ: difference to the reference on the same queries, with a {boot['level']:.0%} paired bootstrap "
                  f"interval over users ({boot['resamples']} resamples, seed {boot['seed']}); **bold**: the interval "
                  f"excludes 0 on the better side (a significant gain); _italics_: the best score of the row."]
    return "\n".join(lines)


def format_csv(table: dict[str, Any]) -> str:
    """The table as CSV: task, metric, higher_is_better, n_queries, n_users, quantity (``score``, then ``diff``,
    ``low`` and ``high`` ``vs`` each reference), one column per method, and ``best`` (on score lines)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "metric", "higher_is_better", "n_queries", "n_users", "quantity",
                     *(c["method"] for c in table["columns"]), "best"])
    for row in table["rows"]:
        head = [row["task"], row["metric"], row["higher_is_better"], row["n"]["queries"], row["n"]["users"]]
        writer.writerow([*head, "score", *(_number(row["scores"].get(c["method"])) for c in table["columns"]),
                         " ".join(row["best"])])
        for ref, deltas in row["deltas"].items():
            for part in ("diff", "low", "high"):
                writer.writerow([*head, f"{part} vs {ref}",
                                 *(_number(deltas.get(c["method"], {}).get(part)) for c in table["columns"]), ""])
    return buf.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def write_table(table: dict[str, Any], out_dir: str | Path, stem: str = "leaderboard",
                meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``{stem}.md``, ``{stem}.csv`` and ``{stem}.json`` (the table plus ``meta``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
    paths["md"].write_text(format_markdown(table) + "\n", encoding="utf-8")
    paths["csv"].write_text(format_csv(table), encoding="utf-8")
    write_json(paths["json"], {**table, "meta": meta or {}})
    return paths


def machine() -> str:
    """The hardware a table was measured on: CPU model and cores (or the GPU), and whether bf16 was fast there."""
    import torch

    from trainers.common import bf16_available

    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                     platform.processor() or platform.machine())
        device = f"{model}, {os.cpu_count()} CPU cores"
    return f"{device}, {platform.system()} {platform.release()}, bf16 {'yes' if bf16_available() else 'no'}"


_TABLE_ONLY = {"tasks", "out_dir", "resamples", "bootstrap_seed"}


def task_rows(config: EvalConfig, task: Task, methods: Sequence[Method], out: Path) -> list[dict[str, Any]]:
    """One task's result rows: reused from ``{out}/rows/{task}.json`` when that was written by a finished run with
    the same settings, methods and data (so a long leaderboard resumes task by task and a final all-task call only
    rebuilds the table), else run and recorded."""
    pipeline = Pipeline(config, task)
    key = config_hash({"config": {k: v for k, v in dataclasses.asdict(config).items() if k not in _TABLE_ONLY},
                       "methods": [m.name for m in methods], "task": task.name,
                       "data": [file_hash(*pipeline.source_files(s)) for s in ("train", config.split)]})
    path = out / "rows" / f"{task.name}.json"
    if path.exists():
        done = read_json(path)
        if done.get("key") == key and all(Path(r["predictions"]).exists() for r in done["rows"]):
            return done["rows"]
    rows = pipeline.run(methods, out / "predictions")
    write_json(path, {"key": key, "rows": rows})
    return rows


def run_eval(config: EvalConfig) -> tuple[dict[str, Any], dict[str, Path], list[dict[str, Any]]]:
    """Run the configured methods on every task; returns ``(table, written paths, result rows)``."""
    methods = [parse_method(m) for m in config.methods]
    tasks = [get_task(t) for t in config.tasks]
    out = Path(config.out_dir or Path(config.workdir) / "results")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for task in tasks:
        task_start = time.perf_counter()
        rows += task_rows(config, task, methods, out)
        print(f"{task.name}: {len(methods)} methods in {time.perf_counter() - task_start:.0f} s", flush=True)
    table = build_table(rows, resamples=config.resamples, seed=config.bootstrap_seed)
    meta = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "wall_seconds": round(time.perf_counter() - start, 1), "config": dataclasses.asdict(config),
            "results": rows}
    return table, write_table(table, out, meta=meta), rows


def rescore(predictions: str | Path, golds: str | Path, task: str | Task) -> dict[str, float]:
    """Score a written prediction file against a written golds file (what LaMP's official script does)."""
    return score(task, read_predictions(predictions), read_predictions(golds))


__all__ = ["EvalConfig", "Method", "Pipeline", "PipelineConfig", "build_table", "format_csv",
           "format_markdown", "parse_method", "rescore", "run_eval", "write_table"]
