"""The settings of ``oppu-hub demo`` (:mod:`oppu_hub.demo` runs them): the leaderboard's, sized for a CPU
(torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainers.base_config import BaseTaskConfig
from trainers.user_config import UserAdapterConfig

from .pipeline_config import EvalConfig, base_field, user_field


@dataclass
class DemoConfig(EvalConfig):
    """:class:`~oppu_hub.pipeline_config.EvalConfig` with demo-sized defaults: the protocol's base on LaMP-2N (every
    training example: there are 644) for 1 epoch instead of its dev-chosen epochs, the k=0 columns only (a second
    base for k=1 would double the training), users' newest 16 history items instead of up to 128, 256-token prompts:
    minutes on 2 CPU cores without bf16. Plus where the public sources are and how many queries each user gets.

    Args:
        source_dir: the public source data (``../shared/data``); the data is built into ``{workdir}/data``.
        queries_per_user: each user's latest N items are queries (sharing the history before the first).
    """

    source_dir: str = field(default="../shared/data", metadata={"help": "public source data"})
    queries_per_user: int = field(default=3, metadata={"help": "queries per user in the built data"})
    tasks: list[str] = field(default_factory=lambda: ["LaMP-2N"], metadata={"help": "tasks to run"})
    methods: list[str] = field(default_factory=lambda: ["majority", "user-majority", "bm25-copy", "np-k0", "oppu-k0"],
                               metadata={"help": "methods (columns); baselines a task lacks are left out"})
    workdir: str = field(default="runs/demo", metadata={"help": "data, bases, adapters, predictions"})
    data_dir: str = field(default="", metadata={"help": "LaMP-format data (default: built into {workdir}/data)"})
    users: int | None = field(default=10, metadata={"help": "test users per task"})
    base: BaseTaskConfig = base_field(max_prompt_length=256, num_train_epochs=1.0)
    user: UserAdapterConfig = user_field(max_history=16, max_prompt_length=256)
    resamples: int = field(default=1000, metadata={"help": "bootstrap resamples"})


__all__ = ["DemoConfig"]
