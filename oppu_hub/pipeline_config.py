"""The settings of the eval pipeline (:mod:`oppu_hub.pipeline`): :class:`PipelineConfig` (shared by ``eval`` and
``analyze``), :class:`EvalConfig` (``oppu-hub eval``) and the nested training configs' fields (torch-free).

Field names, defaults and order are part of every trained artifact's identity: bases, adapters and leaderboard rows
are found again by the hash of these configs (:func:`oppu_hub.pipeline.config_hash`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trainers.base_config import BaseTaskConfig
from trainers.user_config import UserAdapterConfig

from . import protocol
from .decoding_config import DecodingOptions
from .methods import DEFAULT_METHODS
from .tasks import TASKS
from .tuned import TUNED_FIELDS, TUNED_SETTINGS

# The training configs' fields the Pipeline fills in per task and method (they have no flags of their own).
BASE_FILLED = ("task", "data_dir", "k", "profile", "profiles_dir", "output_dir", "overwrite")
USER_FILLED = ("task", "data_dir", "k", "profile", "profiles_dir", "output_dir", "base_dir", "split", "users",
               "max_users", "history_format", "update", "push_to_hub", "hub_store")


def base_field(**settings: Any) -> Any:
    """A pipeline config's ``base`` field: a :class:`~trainers.base_config.BaseTaskConfig` with the protocol's
    settings (:mod:`oppu_hub.protocol`: example cap, batch, learning rate; epochs unset: the task's dev choice) and
    ``settings``."""
    defaults = {"max_examples": protocol.BASE_MAX_EXAMPLES, "num_train_epochs": None,
                "per_device_train_batch_size": protocol.BASE_BATCH_SIZE,
                "learning_rate": protocol.BASE_LEARNING_RATE, **settings}
    return field(default_factory=lambda: BaseTaskConfig(**defaults), metadata={
        "help": "task adaptation of the base (trainers.base_config.BaseTaskConfig)", "no_flags": BASE_FILLED,
        "unset": {"num_train_epochs": "the task's dev-chosen epochs, oppu_hub/protocol.json"}})


def user_field(**settings: Any) -> Any:
    """A pipeline config's ``user`` field: a :class:`~trainers.user_config.UserAdapterConfig` with the protocol's
    history cap (:data:`oppu_hub.protocol.USER_MAX_HISTORY`), the :data:`TUNED_SETTINGS` unset, and ``settings``."""
    defaults = {**dict.fromkeys(TUNED_SETTINGS), "max_history": protocol.USER_MAX_HISTORY, **settings}
    return field(default_factory=lambda: UserAdapterConfig(**defaults), metadata={
        "help": "the per-user adapters (trainers.user_config.UserAdapterConfig)", "no_flags": USER_FILLED,
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
        methods: methods to run (columns, :mod:`oppu_hub.methods`), e.g. ``np-k0 rag-k1 oppu-k1`` (default: the
            baselines, the paper's Table 2 and ``pooled-k0``/``pooled-k1``).
        out_dir: where ``leaderboard.{md,csv,json}`` go (default ``{workdir}/results``).
        references: the methods every column is compared with, each with its paired interval (default ``np-k0``
            and the RAG method with the smallest k); table-only, as the bootstrap settings.
        resamples / bootstrap_seed: the paired bootstrap over users behind the table's confidence intervals.
        reuse_only: run nothing; tasks without finished rows for these settings are listed as not run.
        rows_from: other tables' folders whose rows of the same method, settings and data are copied in instead
            of computed again (:mod:`oppu_hub.task_progress`).
    """

    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "tasks to evaluate"})
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS),
                               metadata={"help": "methods (columns): majority user-majority bm25-copy np-k0 "
                                                 "random-kN rag-kN pag-kN pooled-kN oppu-kN pag-oppu-kN"})
    out_dir: str | None = field(default=None, metadata={"help": "table folder (default {workdir}/results)"})
    references: list[str] | None = field(default=None, metadata={
        "help": "methods each column is compared with, with paired intervals (default: np-k0 and the smallest-k "
                "RAG)"})
    resamples: int = field(default=1000, metadata={"help": "bootstrap resamples of the users (confidence intervals)"})
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the bootstrap resamples"})
    reuse_only: bool = field(default=False, metadata={
        "help": "train and predict nothing: the table of the tasks whose rows are finished, the others listed as "
                "not run"})
    rows_from: list[str] | None = field(default=None, metadata={
        "help": "other tables' folders whose rows of the same method, settings and data are copied in"})


__all__ = ["BASE_FILLED", "USER_FILLED", "EvalConfig", "PipelineConfig", "base_field", "user_field"]
