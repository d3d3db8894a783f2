"""The main job on the embedded defaults (``make demo`` / ``oppu-hub demo``): build LaMP data from the public
sources with several queries per user, then run the leaderboard pipeline (:mod:`oppu_hub.evaluation`) on a
CPU-sized slice: the label-prior / BM25-copy baselines, non-personalized, RAG, OPPU and OPPU + RAG, each column
with a base and adapters trained with its own prompts, and paired bootstrap intervals over users. Finally the Space's
default paths are pointed at what was trained, so ``make space`` shows the same models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .builders import BuildConfig, build, format_summary
from .demo_config import DemoConfig
from .evaluation import run_eval
from .leaderboard import format_markdown
from .protocol import USER_MAX_HISTORY

LEADERBOARD = "bench/results/leaderboard/leaderboard.md"  # the full table, under the protocol proper (docs/eval.md)


def run_demo(config: DemoConfig) -> tuple[dict[str, Any], dict[str, Path]]:
    """Build the data (reused when up to date), run the pipeline and link the Space's default paths; returns the
    table and the files written."""
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
    defaults) at the content-addressed bases and adapters of the OPPU columns, and, when the demo ran
    ``two-stage-kN``, ``.../{variant}-collective-train`` and ``.../{variant}-two-stage-lora`` at the collective base
    and the adapters on it (the Space's two-stage column), replacing older links atomically."""
    for row in rows:
        method = row.get("method", "")
        if not method.startswith(("oppu-", "two-stage-k")) or not row.get("adapters"):
            continue
        adapters, base = Path(row["adapters"]), Path(row["base"])
        name = adapters.name.replace("-lora", "-two-stage-lora") if method.startswith("two-stage") else adapters.name
        for link, target in ((work / "space" / "base" / row["task"] / base.name, base),
                             (work / "space" / "users" / row["task"] / name, adapters)):
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
