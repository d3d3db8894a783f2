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
``oppu-cd``    ``oppu`` with contrastive personal decoding           same as ``oppu``
``prior-np``   the base's label scores + the user's label prior      base with k
``oppu-prior`` ``oppu``'s label scores + the user's label prior      same as ``oppu``
=============  ====================================================  =====================================

The last three decode with :class:`~oppu_hub.decoding_config.DecodingOptions` (``contrast_alpha``,
``prior_weight``); ``--answers labels`` scores the labels of classification and rating tasks for every method
instead of generating (the prior methods always do; they have no row on generation tasks).

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
from typing import Any, ClassVar, TypeVar

from trainers import BaseTaskConfig, UserAdapterConfig, train_base, train_users
from trainers.base import BASE_RECORD

from . import protocol
from .adapters import is_complete
from .baselines import BASELINES, POOLED_USER, POOLED_VIEW_VERSION, applies, pooled_split, predict_baseline
from .data import LampSplit, load_task_split, read_predictions, write_predictions, write_split
from .decoding_config import DecodingOptions
from .io import read_json, safe_name, write_json
from .metrics import score
from .retrieval import RANDOM_HISTORY_VERSION
from .stats import LEVEL, Interval, PairedBootstrap
from .tasks import TASKS, Task, get_task
from .tuned import TUNED_FIELDS, TUNED_SETTINGS, user_settings

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
    "oppu-cd": "RAG+OPPU",
    "prior-np": "Non-Personalized",
    "oppu-prior": "RAG+OPPU",
}
GROUP_ORDER = ("Baselines", "Non-Personalized", "RAG", "PAG", "Pooled", "RAG+OPPU", "PAG+OPPU")
TABLE2_METHODS = ("np-k0", "random-k1", "rag-k1", "rag-k2", "rag-k4", "pag-k0", "pag-k1",
                  "oppu-k0", "oppu-k1", "oppu-k2", "oppu-k4", "pag-oppu-k0", "pag-oppu-k1")
DEFAULT_METHODS = (*BASELINES, *TABLE2_METHODS, "pooled-k0", "pooled-k1")
SMALL_METHODS = ("np-k0", "random-k1", "rag-k1", "oppu-k0", "oppu-k1")
_METHOD = re.compile(r"(pag-oppu|pag|pooled|oppu-cd|oppu-prior|oppu|prior-np|np|random|rag)-k(\d+)|("
                     + "|".join(map(re.escape, BASELINES)) + ")")
_VARIANTS = ("oppu-cd", "oppu-prior", "prior-np")  # after their plain family in a column group


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
        variant = {"random": "random ", "oppu-cd": "CD ", "oppu-prior": "prior ", "prior-np": "prior "}
        return f"{variant.get(self.family, '')}k={self.k}"

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
        """Predicts with the evaluated users' own adapters."""
        return self.family in ("oppu", "pag-oppu", "oppu-cd", "oppu-prior")

    @property
    def contrastive(self) -> bool:
        return self.family == "oppu-cd"

    @property
    def prior(self) -> bool:
        """Label scores shifted by the user's label prior (classification and rating tasks only)."""
        return self.family in ("prior-np", "oppu-prior")

    @property
    def random_history(self) -> bool:
        return self.family == "random"

    def sort_key(self) -> tuple[int, int, int]:
        within = (BASELINES.index(self.family) if self.baseline else int(self.family == "random")
                  + 2 * (1 + _VARIANTS.index(self.family) if self.family in _VARIANTS else 0))
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


# The training configs' fields the Pipeline fills in per task and method (they have no flags of their own).
BASE_FILLED = ("task", "data_dir", "k", "profile", "profiles_dir", "output_dir", "overwrite")
USER_FILLED = ("task", "data_dir", "k", "profile", "profiles_dir", "output_dir", "base_dir", "split", "users",
               "max_users", "history_format", "update", "push_to_hub", "hub_store")


def base_field(**settings: Any) -> Any:
    """A pipeline config's ``base`` field: a :class:`~trainers.base.BaseTaskConfig` with the protocol's settings
    (:mod:`oppu_hub.protocol`: example cap, batch, learning rate; epochs unset: the task's dev choice) and
    ``settings``."""
    defaults = {"max_examples": protocol.BASE_MAX_EXAMPLES, "num_train_epochs": None,
                "per_device_train_batch_size": protocol.BASE_BATCH_SIZE,
                "learning_rate": protocol.BASE_LEARNING_RATE, **settings}
    return field(default_factory=lambda: BaseTaskConfig(**defaults), metadata={
        "help": "task adaptation of the base (trainers.base.BaseTaskConfig)", "no_flags": BASE_FILLED,
        "unset": {"num_train_epochs": "the task's dev-chosen epochs, oppu_hub/protocol.json"}})


def user_field(**settings: Any) -> Any:
    """A pipeline config's ``user`` field: a :class:`~trainers.user.UserAdapterConfig` with the protocol's history
    cap (:data:`oppu_hub.protocol.USER_MAX_HISTORY`), the :data:`TUNED_SETTINGS` unset, and ``settings``."""
    defaults = {**dict.fromkeys(TUNED_SETTINGS), "max_history": protocol.USER_MAX_HISTORY, **settings}
    return field(default_factory=lambda: UserAdapterConfig(**defaults), metadata={
        "help": "the per-user adapters (trainers.user.UserAdapterConfig)", "no_flags": USER_FILLED,
        "unset": {**dict.fromkeys(TUNED_FIELDS, "the task's dev-tuned value, oppu_hub/tuned.py"),
                  "lora_alpha": "the LoRA rank"}})


@dataclass
class PipelineConfig(DecodingOptions):
    """How bases and adapters are trained and methods predicted (shared by ``eval`` and ``analyze``).

    Args:
        data_dir: LaMP-format data (``{data_dir}/{task}/{split}_questions.json``): rebuilt or official files.
        split: the split whose users are evaluated (``test``; ``dev`` for official LaMP, whose test golds are
            hidden).
        workdir: where bases, adapters, profiles, data views and predictions go (reused across runs).
        users: evaluated users per task (the first N of the split; 0 or none: all).
        train_users: training users used for task adaptation (the first N; none: all).
        base: task adaptation, every setting but the :data:`BASE_FILLED` ones the pipeline sets per task and
            method; its ``base_model`` also writes the profiles.
        user: the per-user adapters, every setting but :data:`USER_FILLED`; ``learning_rate``,
            ``num_train_epochs``, ``target_modules`` and ``lora_r`` left ``None`` take the task's dev-tuned value
            (:mod:`oppu_hub.tuned`), ``lora_alpha`` left ``None`` the rank. ``concurrent`` (how many LoRA users
            train together) is not part of an adapter's identity.
        predict_batch_size: prompts per ``generate`` call.
        profile_items / profile_tokens: history items shown to the profile writer and profile length.
        answers / contrast_* / prior_*: how answers are decoded (:class:`~oppu_hub.decoding_config.DecodingOptions`).

    On the command line ``base`` and ``user`` are the flags ``--base.NAME`` and ``--user.NAME``
    (:class:`oppu_hub.cli.ConfigParser`); ``--NAME`` for a name in :attr:`shared_flags` sets both (a stage's own
    flag wins). Prompts are predicted with the token budget of the stage their model comes from.
    """

    shared_flags: ClassVar[tuple[str, ...]] = ("max_prompt_length", "precision", "seed",
                                               "per_device_train_batch_size")

    data_dir: str = field(default="data", metadata={"help": "LaMP-format data folder"})
    split: str = field(default="test", metadata={"help": "evaluated split: test | dev"})
    workdir: str = field(default="runs/eval", metadata={"help": "bases, adapters, profiles, predictions"})
    users: int | None = field(default=3, metadata={"help": "evaluated users per task (first N; 0 = all)"})
    train_users: int | None = field(default=None, metadata={"help": "training users for task adaptation"})
    base: BaseTaskConfig = base_field()
    user: UserAdapterConfig = user_field()
    predict_batch_size: int = field(default=32, metadata={"help": "prompts per generate call"})
    profile_items: int = field(default=8, metadata={"help": "history items shown to the profile writer"})
    profile_tokens: int = field(default=80, metadata={"help": "profile length in tokens"})


@dataclass
class EvalConfig(PipelineConfig):
    """The leaderboard (``oppu-hub eval``).

    Args:
        tasks: tasks to evaluate (rows of the table).
        methods: methods to run (columns), e.g. ``np-k0 rag-k1 oppu-k1`` (default: the baselines, the paper's
            Table 2 and ``pooled-k0``/``pooled-k1``).
        out_dir: where ``leaderboard.{md,csv,json}`` go (default ``{workdir}/results``).
        resamples / bootstrap_seed: the paired bootstrap over users behind the table's confidence intervals.
        reuse_only: run nothing; tasks without finished rows for these settings are listed as not run.
    """

    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "tasks to evaluate"})
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS),
                               metadata={"help": "methods (columns): majority user-majority bm25-copy np-k0 "
                                                 "random-kN rag-kN pag-kN pooled-kN oppu-kN pag-oppu-kN"})
    out_dir: str | None = field(default=None, metadata={"help": "table folder (default {workdir}/results)"})
    resamples: int = field(default=1000, metadata={"help": "bootstrap resamples of the users (confidence intervals)"})
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the bootstrap resamples"})
    reuse_only: bool = field(default=False, metadata={
        "help": "train and predict nothing: the table of the tasks whose rows are finished, the others listed as "
                "not run"})


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
StageConfig = TypeVar("StageConfig", BaseTaskConfig, UserAdapterConfig)


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
        self._bases: dict[tuple[int, bool], tuple[BaseTaskConfig, dict[str, Any]]] = {}

    # --- data ------------------------------------------------------------------------------------------
    def source_files(self, split: str) -> tuple[Path, Path]:
        folder = Path(self.config.data_dir) / self.task.name
        return folder / f"{split}_questions.json", folder / f"{split}_outputs.json"

    def source_hashes(self) -> list[str]:
        """The hashes of the train split's and the evaluated split's files: the data a result depends on."""
        return [file_hash(*self.source_files(s)) for s in ("train", self.config.split)]

    def data_view(self) -> Path:
        """A data folder with the (capped) training users and the (filtered) evaluated split, written once under
        a name derived from its inputs."""
        if self._view is not None:
            return self._view
        c = self.config
        train, evaluated = self.source_hashes()
        key = config_hash({"train": train, "eval": evaluated, "train_users": c.train_users, "split": c.split,
                           "history": self.history_tag})
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
        return self.work / "profiles" / config_hash({"model": c.base.base_model, "items": c.profile_items,
                                                     "tokens": c.profile_tokens})

    def ensure_profiles(self) -> None:
        """Profiles of the training users (for the PAG base) and of the evaluated users (cached)."""
        from .profiles import ProfileConfig, generate_profiles

        c = self.config
        train = load_task_split(self.data_view(), self.task, "train")
        evaluated = self.eval_split()
        users = [(u, train.user_history(u)) for u in train.user_ids]
        users += [(u, evaluated.user_history(u)) for u in self.users()]
        generate_profiles(ProfileConfig(task=self.task.name, model=c.base.base_model,
                                        profiles_dir=str(self.profiles_dir()), num_items=c.profile_items,
                                        max_new_tokens=c.profile_tokens), users)

    def _profiles_hash(self, users: Sequence[str]) -> str:
        from .profiles import ProfileStore

        store = ProfileStore(self.profiles_dir(), self.task)
        return config_hash([store.get(u) for u in users])

    # --- training --------------------------------------------------------------------------------------
    def _fill(self, template: StageConfig, k: int, profile: bool, **fields: Any) -> StageConfig:
        """A stage's config: ``template`` with what this task and method set (task, data, k, profile...)."""
        return dataclasses.replace(template, **{"task": self.task.name, "data_dir": str(self.data_view()), "k": k,
                                                "profile": profile, "profiles_dir": str(self.profiles_dir()),
                                                **fields})

    def tuned_settings(self) -> dict[str, Any]:
        """The user-adapter settings the config leaves unset (``None``), resolved by
        :func:`oppu_hub.tuned.user_settings`: the task's dev-tuned values, alpha the rank."""
        given = {name: getattr(self.config.user, name) for name in TUNED_SETTINGS}
        return {k: v for k, v in user_settings(self.task.name, **given).items() if given[k] is None}

    def base_config(self, k: int, profile: bool = False) -> tuple[BaseTaskConfig, dict[str, Any]]:
        """The training config of the task-adapted base for prompts with ``k`` items (and profile), and the dict
        whose hash names its folder (``output_dir``: ``{workdir}/base/{hash}``): the config, the training data and
        (PAG) the training users' profiles. Nothing is trained."""
        if (k, profile) not in self._bases:
            epochs = self.config.base.num_train_epochs or protocol.base_epochs(self.task.name)
            cfg = self._fill(self.config.base, k, profile, num_train_epochs=epochs)
            view = self.data_view() / self.task.name
            profiles = None
            if profile:
                profiles = self._profiles_hash(load_task_split(self.data_view(), self.task, "train").user_ids)
            hashed = {**_hashable(cfg), "train_data": file_hash(view / "train_questions.json",
                                                                view / "train_outputs.json"), "profiles": profiles}
            root = self.work / "base" / config_hash(hashed)
            self._bases[(k, profile)] = (dataclasses.replace(cfg, output_dir=str(root)), hashed)
        return self._bases[(k, profile)]

    def base_dir(self, k: int, profile: bool = False) -> Path:
        """The task-adapted base of :meth:`base_config`, trained unless it exists."""
        cfg, hashed = self.base_config(k, profile)
        target = cfg.target_dir()
        if not (target / BASE_RECORD).exists():
            logger.info("training base %s", target)
            write_json(Path(cfg.output_dir) / "eval_config.json", hashed)
            train_base(cfg)
            if self.on_train:
                self.on_train("base", target)
        return target

    def adapters_config(self, k: int, profile: bool = False, peft_type: str | None = None,
                        history_format: str = "full") -> tuple[UserAdapterConfig, dict[str, Any]]:
        """:meth:`_user_config` of the evaluated users' adapters trained with ``k`` (and profile). Nothing is
        trained."""
        c = self.config
        return self._user_config(k, profile, peft_type, history_format, self.data_view(), self.users(),
                                 c.user.max_history, {"eval_data": file_hash(*self.source_files(c.split))})

    def adapters_dir(self, k: int, profile: bool = False, peft_type: str | None = None,
                     history_format: str = "full") -> Path:
        """The evaluated users' adapters of :meth:`adapters_config`, on the matching base; users whose adapter
        exists are skipped, so only missing ones are trained."""
        return self._train_adapters(*self.adapters_config(k, profile, peft_type, history_format))

    def pooled_view(self) -> Path:
        """A data folder whose evaluated split has one user holding all evaluated users' histories (each cut to
        ``max_history``; :func:`oppu_hub.baselines.pooled_split`), written once under a name derived from its
        inputs."""
        c = self.config
        key = config_hash({"view": self.data_view().name, "users": self.users(), "max_history": c.user.max_history,
                           "version": POOLED_VIEW_VERSION})
        view = self.work / "views" / self.task.name / f"pooled-{key}"
        if not (view / self.task.name / f"{c.split}_outputs.json").exists():
            write_split(pooled_split(self.eval_split(), self.users(), c.user.max_history), view / self.task.name,
                        c.split)
        return view

    def pooled_config(self, k: int, peft_type: str | None = None, history_format: str = "full"
                      ) -> tuple[UserAdapterConfig, dict[str, Any]]:
        """:meth:`_user_config` of the ``pooled-k{k}`` adapter (the user ``pooled`` of :meth:`pooled_view`, with
        the settings of ``oppu-k{k}``'s adapters). Nothing is trained."""
        view = self.pooled_view()
        pooled_data = file_hash(view / self.task.name / f"{self.config.split}_questions.json")
        return self._user_config(k, False, peft_type, history_format, view, [POOLED_USER], None,
                                 {"pooled_data": pooled_data})

    def pooled_adapter(self, k: int, peft_type: str | None = None, history_format: str = "full") -> Path:
        """The ``pooled-k{k}`` control of :meth:`pooled_config`: one adapter trained on all evaluated users'
        histories together, on the same base as ``oppu-k{k}``'s adapters."""
        return self._train_adapters(*self.pooled_config(k, peft_type, history_format)) / safe_name(POOLED_USER)

    def artifacts(self, method: str | Method, peft_type: str | None = None, history_format: str = "full"
                  ) -> tuple[Path | None, Path | None]:
        """The folders of the base and the adapters (per-user folder, or the pooled adapter) that ``method``
        predicts with (``None`` where it uses none); nothing is trained. They are named by the hashes of their
        resolved training configs, tuned defaults included."""
        m = parse_method(method)
        if m.baseline:
            return None, None
        base = self.base_config(m.k, m.profile)[0].target_dir()
        if m.pooled:
            return base, self.pooled_config(m.k, peft_type, history_format)[0].adapters_dir() / safe_name(POOLED_USER)
        if m.oppu:
            return base, self.adapters_config(m.k, m.profile, peft_type, history_format)[0].adapters_dir()
        return base, None

    def _user_config(self, k: int, profile: bool, peft_type: str | None, history_format: str, data_dir: Path,
                     users: list[str], max_history: int | None, data: dict[str, str]
                     ) -> tuple[UserAdapterConfig, dict[str, Any]]:
        """The config of the adapters of ``users`` of ``data_dir``'s evaluated split on the base of
        :meth:`base_config`, and the dict whose hash names their folder (``output_dir``: ``{workdir}/users/{hash}``):
        the config without its execution details, the base's hash, the history filter and ``data`` (what identifies
        the training data)."""
        c = self.config
        base = self.base_config(k, profile)[0].target_dir()
        cfg = self._fill(c.user, k, profile, data_dir=str(data_dir), base_dir=str(base), split=c.split, users=users,
                         max_history=max_history, peft_type=peft_type or c.user.peft_type,
                         history_format=history_format, **self.tuned_settings())
        hashed = {**_hashable(cfg), "base": base.parent.parent.name, "history": self.history_tag, **data}
        return dataclasses.replace(cfg, output_dir=str(self.work / "users" / config_hash(hashed))), hashed

    def _train_adapters(self, cfg: UserAdapterConfig, hashed: dict[str, Any]) -> Path:
        """Train the missing adapters of ``cfg`` (its base first, when missing) and return their folder."""
        self.base_dir(cfg.k, cfg.profile)
        out = cfg.adapters_dir()
        if all(is_complete(out / safe_name(u)) for u in cfg.users):
            return out
        write_json(Path(cfg.output_dir) / "eval_config.json", hashed)
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
        the bootstrap); returns one row per method with its scores (those of the written file). A baseline the
        task does not define (:func:`oppu_hub.baselines.applies`) gets no row."""
        from .inference import Generator, PredictConfig, predict
        from .models import BaseModelConfig, load_base
        from .store import load_user_adapter

        methods = [parse_method(m) for m in methods]
        if any(m.profile for m in methods):
            self.ensure_profiles()
        plan = []
        for m in methods:
            if m.baseline or (m.prior and not self.task.labels):  # prior methods score labels: none to score
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

        def row(m: Method, predictions: dict[str, str], start: float, base: Path | None = None,
                adapters: Path | None = None) -> dict[str, Any]:
            path = write_predictions(self.task, predictions, folder / f"{m.name}{name_suffix}.json")
            return {"task": self.task.name, "method": m.name + name_suffix,
                    "scores": score(self.task, predictions, golds), "predictions": str(path),
                    "golds": str(folder / "golds.json"), "query_users": str(folder / "users.json"),
                    "base": str(base) if base else None, "adapters": str(adapters) if adapters else None,
                    "predict_seconds": round(time.perf_counter() - start, 2)}

        rows = []
        baselines = [m for m in methods if m.baseline and applies(m.family, self.task)]
        if baselines:
            train = load_task_split(self.data_view(), self.task, "train")
            for m in baselines:
                start = time.perf_counter()
                rows.append(row(m, predict_baseline(m.family, split, users, train), start))
        generators: dict[tuple[Path, Path | None], Any] = {}
        for m, base, adapters in sorted(plan, key=lambda p: (str(p[1]), str(p[2]))):
            key = (base, adapters)
            if key not in generators:
                generators.clear()  # one model in memory at a time
                model, tokenizer = load_base(BaseModelConfig(str(base)))
                # The pooled adapter is part of the model that every user's queries share.
                generators[key] = Generator(load_user_adapter(model, None, adapters) if m.pooled else model, tokenizer)
            stage = self.config.user if adapters else self.config.base  # whose prompts the model was trained on
            start = time.perf_counter()
            predictions = predict(PredictConfig(
                task=self.task.name, data_dir=str(self.data_view()), split=self.config.split, base_dir=str(base),
                adapters_dir=str(adapters) if m.oppu else None, k=m.k, profile=m.profile,
                profiles_dir=str(self.profiles_dir()), random_history=m.random_history, history_format=history_format,
                users=users, batch_size=self.config.predict_batch_size, max_prompt_length=stage.max_prompt_length,
                contrastive=m.contrastive, prior=m.prior, **self.decoding(m)), generators[key])
            rows.append(row(m, predictions, start, base, adapters))
        generators.clear()
        order = {m.name + name_suffix: i for i, m in enumerate(methods)}
        return sorted(rows, key=lambda r: order[r["method"]])

    def decoding(self, method: Method) -> dict[str, Any]:
        """The decoding options ``method`` predicts with: the config's, with labels scored for the prior methods
        and generation for contrastive decoding."""
        options = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(DecodingOptions)}
        if method.prior or method.contrastive:
            options["answers"] = "labels" if method.prior else "generate"
        return options


# Fields that do not identify a trained artifact: where things are, which users, and how the training is executed
# (``concurrent``: users trained together give the same adapters as users trained alone, up to float summation order).
_UNHASHED = {"output_dir", "overwrite", "logging_steps", "data_dir", "profiles_dir", "users", "max_users",
             "push_to_hub", "hub_store", "update", "base_dir", "concurrent"}


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
    if not table["rows"]:
        return f"No task has finished rows under these settings; not run: {', '.join(table.get('not_run', []))}."
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
    if table.get("not_run"):
        lines += ["", f"Not run under these settings: {', '.join(table['not_run'])}."]
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
        device = f"GPU {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    else:
        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                     platform.processor() or platform.machine())
        device = f"{model}, {os.cpu_count()} CPU cores"
    return f"{device}, {platform.system()} {platform.release()}, bf16 {'yes' if bf16_available() else 'no'}"


_TABLE_ONLY = {"tasks", "out_dir", "resamples", "bootstrap_seed", "reuse_only"}


def task_rows(config: EvalConfig, task: Task, methods: Sequence[Method], out: Path
              ) -> tuple[list[dict[str, Any]], float, str] | None:
    """One task's result rows, the seconds computing them took and the :func:`machine` that computed them (tasks of
    one table may come from several machines): reused from ``{out}/rows/{task}.json`` when
    that was written by a finished run with the same settings, methods and data and its bases and adapters are
    still the ones these settings name (so a long leaderboard resumes task by task, a final all-task call only
    rebuilds the table, and a changed tuned default re-runs the tasks it touches), else run and recorded (``None``
    with ``config.reuse_only``)."""
    pipeline = Pipeline(config, task)
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in _TABLE_ONLY}
    settings.update(base=_hashable(config.base), user=_hashable(config.user))
    spec = {"config": settings, "methods": [m.name for m in methods], "task": task.name,
            "data": pipeline.source_hashes()}
    if any(m.random_history for m in methods):  # only there, so that other tasks' rows stay valid
        spec["random_history_version"] = RANDOM_HISTORY_VERSION
    key = config_hash(spec)
    path = out / "rows" / f"{task.name}.json"
    if path.exists():
        done = read_json(path)
        if done.get("key") == key and all(_still_valid(pipeline, r) for r in done["rows"]):
            return done["rows"], done.get("seconds", 0.0), done.get("machine", "not recorded")
    if config.reuse_only:
        return None
    start = time.perf_counter()
    rows = pipeline.run(methods, out / "predictions")
    seconds = round(time.perf_counter() - start, 1)
    write_json(path, {"key": key, "rows": rows, "seconds": seconds, "machine": machine()})
    return rows, seconds, machine()


def _still_valid(pipeline: Pipeline, row: dict[str, Any]) -> bool:
    """Whether a recorded result row still stands: its prediction file exists and the base and adapters it
    predicted with are the ones the current settings name (a changed tuned default names other adapters)."""
    base, adapters = pipeline.artifacts(row["method"])
    return (Path(row["predictions"]).exists() and row["base"] == (str(base) if base else None)
            and row["adapters"] == (str(adapters) if adapters else None))


def run_eval(config: EvalConfig) -> tuple[dict[str, Any], dict[str, Path], list[dict[str, Any]]]:
    """Run the configured methods on every task; returns ``(table, written paths, result rows)``. The table is
    rewritten after every finished task, so a long run that stops still leaves the table of what it finished;
    its meta records each task's compute seconds (kept with the task's rows, so a resumed run still reports the
    time the reused rows took) and their sum."""
    methods = [parse_method(m) for m in config.methods]
    tasks = [get_task(t) for t in config.tasks]
    if not tasks:
        raise ValueError("no task to evaluate: give --tasks")
    out = Path(config.out_dir or Path(config.workdir) / "results")
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    machines: dict[str, str] = {}
    table: dict[str, Any] = {}
    paths: dict[str, Path] = {}
    for i, task in enumerate(tasks):
        done = task_rows(config, task, methods, out)
        if done is None:
            print(f"{task.name}: not run (no finished rows for these settings)", flush=True)
        else:
            finished, seconds[task.name], machines[task.name] = done
            rows += finished
            print(f"{task.name}: {len(methods)} methods, {seconds[task.name]:.0f} s of compute", flush=True)
        if done is not None or i == len(tasks) - 1:
            not_run = [t.name for t in tasks[:i + 1] if t.name not in seconds]
            table = {**build_table(rows, resamples=config.resamples, seed=config.bootstrap_seed), "not_run": not_run}
            meta = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                    "task_machines": machines, "task_seconds": seconds,
                    "wall_seconds": round(sum(seconds.values()), 1), "config": dataclasses.asdict(config),
                    "results": rows}
            paths = write_table(table, out, meta=meta)
    return table, paths, rows


def rescore(predictions: str | Path, golds: str | Path, task: str | Task) -> dict[str, float]:
    """Score a written prediction file against a written golds file (what LaMP's official script does)."""
    return score(task, read_predictions(predictions), read_predictions(golds))


__all__ = ["EvalConfig", "Method", "Pipeline", "PipelineConfig", "base_field", "build_table", "format_csv",
           "format_markdown", "parse_method", "rescore", "run_eval", "user_field", "write_table"]
