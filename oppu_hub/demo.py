"""The main job on the embedded defaults (``make demo`` / ``oppu-hub demo``): build LaMP data from the public
sources with several queries per user, then run the leaderboard pipeline (:mod:`oppu_hub.evaluation`) on a
CPU-sized slice: the label-prior / BM25-copy baselines, non-personalized, RAG, OPPU and OPPU + RAG, each column
with a base and adapters trained with its own prompts, and paired bootstrap intervals over users. Finally the Space's
default paths are pointed at what was trained, so ``make space`` shows the same models."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers import BaseTaskConfig, UserAdapterConfig

from .evaluation import EvalConfig, base_field, format_markdown, run_eval, user_field
from .protocol import USER_MAX_HISTORY

LEADERBOARD = "bench/results/leaderboard/leaderboard.md"  # the full table, under the protocol proper (docs/eval.md)


@dataclass
class DemoConfig(EvalConfig):
    """:class:`~oppu_hub.evaluation.EvalConfig` with demo-sized defaults: the protocol's base on LaMP-2N (every
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


def run_demo(config: DemoConfig) -> tuple[dict[str, Any], dict[str, Path]]:
    """Build the data (reused when up to date), run the pipeline and link the Space's default paths; returns the
    table and the files written."""
    from .builders import BuildConfig, build, format_summary

    work = Path(config.workdir)
    if not config.data_dir:
        config.data_dir = str(work / "data")
        print(format_summary(build(BuildConfig(config.source_dir, config.data_dir, tasks=config.tasks,
                                               queries_per_user=config.queries_per_user))))
    table, paths, rows = run_eval(config)
    link_space_paths(work, rows)
    return table, paths


def link_space_paths(work: Path, rows: list[dict[str, Any]]) -> None:
    """Point ``{work}/space/base/{task}/{variant}`` and ``{work}/space/users/{task}/{variant}-lora`` (the Space's
    defaults) at the content-addressed bases and adapters of the OPPU columns (replacing older links atomically)."""
    for row in rows:
        if not row.get("method", "").startswith("oppu-") or not row.get("adapters"):
            continue
        adapters, base = Path(row["adapters"]), Path(row["base"])
        for link, target in ((work / "space" / "base" / row["task"] / base.name, base),
                             (work / "space" / "users" / row["task"] / adapters.name, adapters)):
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{link.name}.{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target.resolve(), target_is_directory=True)
            os.replace(tmp, link)


def protocol_line(config: DemoConfig) -> str:
    """What the demo ran, against the leaderboard's protocol, and where the full table is."""
    base, user = config.base, config.user
    cap = f"up to {base.max_examples}" if base.max_examples else "all"
    epochs = f"{base.num_train_epochs:g} epoch(s)" if base.num_train_epochs else "the dev-chosen epochs"
    history = f"newest {user.max_history}" if user.max_history else "whole"
    return (f"Demo protocol: bases on {cap} training examples for {epochs}; {config.users or 'all'} test users, "
            f"adapters on their {history} history items (the leaderboard: dev-chosen base epochs, up to "
            f"{USER_MAX_HISTORY} items, 40 users per task; full table: {LEADERBOARD}).")


def format_demo(config: DemoConfig, table: dict[str, Any], paths: dict[str, Path]) -> str:
    return (f"{protocol_line(config)}\n\n{format_markdown(table)}\n\n"
            f"written: {', '.join(str(p) for p in paths.values())}")
