"""Sweep the user adapter on **dev** users (never test users) and record the choice (docs/tuning.md).

Each setting is a full ``oppu-k0`` run of the eval pipeline on the dev split: the same task-adapted base, one
adapter per dev user trained with that setting (content-addressed, so an interrupted sweep resumes and a finished
setting is never retrained), predictions written in LaMP's format and scored from the files, with a fresh
``Generator`` per adapter set. The label-prior baselines and ``np-k0`` are scored on the same queries for reference.

Grids: ``full`` is every combination of ``--lrs x --epochs x --targets x --ranks``; ``staged`` (default, a third of
the CPU time) sweeps lr x epochs at the first target and rank, then targets x ranks at the best lr and epochs.
The chosen setting is the cheapest one whose first metric (accuracy, MAE, ROUGE-1) is within one query's worth
(1/n) of the best (:func:`choose`). A sweep of the same settings and data extends the rows already in
``tune_users-{task}.json`` (:func:`earlier_rows`); one of other settings is refused unless ``--replace``.

    .venv/bin/python bench/tune_users.py --tasks LaMP-2N --data_dir runs/eval/data --workdir runs/tune

Flags: the sweep's (:class:`SweepConfig`) and the pipeline's (:class:`oppu_hub.pipeline_config.PipelineConfig`:
``--users``, ``--base.max_examples``, ``--user.max_history``...); the swept settings replace the ``--user.*`` ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oppu_hub.cli import ConfigParser
from oppu_hub.evaluation import machine
from oppu_hub.io import read_json, write_json
from oppu_hub.pipeline import Pipeline
from oppu_hub.pipeline_config import PipelineConfig
from oppu_hub.tasks import get_task

TARGETS = {"qv": ["q_proj", "v_proj"], "all-linear": ["all-linear"]}


@dataclass
class SweepConfig:
    """What to sweep. Args: tasks; lrs / epochs / targets (``qv``, ``all-linear``) / ranks: the grid; grid:
    ``staged`` or ``full``; baselines: methods scored once for reference; out: where the JSON goes; replace:
    overwrite a JSON of another sweep's settings or data."""

    tasks: list[str] = field(default_factory=lambda: ["LaMP-2N"], metadata={"help": "tasks to tune"})
    lrs: list[float] = field(default_factory=lambda: [3e-4, 1e-3, 3e-3], metadata={"help": "learning rates"})
    epochs: list[float] = field(default_factory=lambda: [2.0, 3.0, 5.0], metadata={"help": "epochs"})
    targets: list[str] = field(default_factory=lambda: ["qv", "all-linear"], metadata={"help": "qv | all-linear"})
    ranks: list[int] = field(default_factory=lambda: [8, 16], metadata={"help": "LoRA ranks"})
    grid: str = field(default="staged", metadata={"help": "staged | full"})
    baselines: list[str] = field(default_factory=lambda: ["majority", "user-majority", "bm25-copy", "np-k0"],
                                 metadata={"help": "reference methods scored once (those a task supports)"})
    out: str = field(default="bench/results", metadata={"help": "folder of tune_users-{task}.json"})
    replace: bool = field(default=False, metadata={
        "help": "overwrite a tune_users-{task}.json of other settings or data (else refused)"})


def setting_config(base: PipelineConfig, lr: float, epochs: float, target: str, rank: int) -> PipelineConfig:
    user = dataclasses.replace(base.user, learning_rate=lr, num_train_epochs=epochs, target_modules=TARGETS[target],
                               lora_r=rank, lora_alpha=rank)
    return dataclasses.replace(base, user=user)


def cost(row: dict[str, Any]) -> tuple[float, bool, int]:
    """Training cost order of a setting: epochs first, then all-linear over q/v, then rank."""
    return row["epochs"], row["target"] != "qv", row["rank"]


def choose(task_name: str, rows: list[dict[str, Any]], n_queries: int) -> dict[str, Any]:
    """The chosen setting: the cheapest (:func:`cost`) whose first metric is within one query's worth (``1/n``)
    of the best row's; among equally cheap ones, the best scoring. With a few dozen dev queries smaller differences
    are noise, and training time decides how many users a leaderboard can hold."""
    task = get_task(task_name)
    metric = task.metric_names[0]
    sign = 1 if task.higher_is_better else -1
    best = max(sign * r["scores"][metric] for r in rows)
    near = [r for r in rows if sign * r["scores"][metric] >= best - 1 / n_queries - 1e-9]
    return min(near, key=lambda r: (*cost(r), -sign * r["scores"][metric]))


def run_setting(config: PipelineConfig, task: str, out: Path, **setting: Any) -> dict[str, Any]:
    cfg = setting_config(config, **setting)
    start = time.perf_counter()
    tag = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in setting.items())
    [row] = Pipeline(cfg, task).run(["oppu-k0"], out / tag)
    # seconds: this call's wall time (training only when the adapters did not exist yet, then prediction)
    return {**setting, "scores": row["scores"], "seconds": round(time.perf_counter() - start, 1),
            "predictions": row["predictions"]}


def earlier_rows(path: Path, config: dict[str, Any], data: list[str], replace: bool = False) -> list[dict[str, Any]]:
    """The rows of the sweep already in ``path`` when it ran with the same pipeline ``config`` on the same
    ``data``: a sweep extends it (they count in the choice and are not run again) instead of dropping them. A file
    of other settings or data is refused unless ``replace``."""
    if not path.exists() or replace:
        return []
    earlier = read_json(path)
    if earlier.get("config") == config and earlier.get("data") == data:
        return earlier["rows"]
    raise SystemExit(f"tune_users: {path} holds a sweep of other settings or data (or of before the data was "
                     "recorded); pass --replace to overwrite it")


def sweep_task(config: PipelineConfig, sweep: SweepConfig, task: str) -> dict[str, Any]:
    out = Path(config.workdir) / "sweep" / get_task(task).name
    pipeline = Pipeline(config, task)
    data = pipeline.source_hashes()
    settings = json.loads(json.dumps(dataclasses.asdict(config)))
    rows = earlier_rows(result_path(sweep, task), settings, data, sweep.replace)
    reference = pipeline.run(sweep.baselines, out / "reference")  # a baseline the task lacks gets no row
    n_queries = sum(len(pipeline.eval_split().user_questions(u)) for u in pipeline.users())

    def run(lr: float, epochs: float, target: str, rank: int) -> None:
        if any((r["lr"], r["epochs"], r["target"], r["rank"]) == (lr, epochs, target, rank) for r in rows):
            return
        rows.append(run_setting(config, task, out, lr=lr, epochs=epochs, target=target, rank=rank))
        print(json.dumps({"task": task, **{k: v for k, v in rows[-1].items() if k != "predictions"}}), flush=True)

    if sweep.grid == "full":
        for lr, epochs, target, rank in itertools.product(sweep.lrs, sweep.epochs, sweep.targets, sweep.ranks):
            run(lr, epochs, target, rank)
    elif sweep.grid == "staged":
        for lr, epochs in itertools.product(sweep.lrs, sweep.epochs):
            run(lr, epochs, sweep.targets[0], sweep.ranks[0])
        best = choose(task, rows, n_queries)
        for target, rank in itertools.product(sweep.targets, sweep.ranks):
            run(best["lr"], best["epochs"], target, rank)
    else:
        raise ValueError(f"unknown grid {sweep.grid!r}; expected staged or full")
    best = choose(task, rows, n_queries)
    return {"task": get_task(task).name, "split": config.split, "users": len(pipeline.users()),
            "n_queries": n_queries, "config": settings, "data": data,
            "reference": [{"method": r["method"], "scores": r["scores"]} for r in reference],
            "rows": rows, "best": {k: best[k] for k in ("lr", "epochs", "target", "rank")}}


def result_path(sweep: SweepConfig, task: str) -> Path:
    return Path(sweep.out) / f"tune_users-{get_task(task).name}.json"


def format_sweep(result: dict[str, Any]) -> str:
    task = get_task(result["task"])
    m1, m2 = task.metric_names
    arrow = "↑" if task.higher_is_better else "↓"
    lines = [f"**{task.name}**, {result['split']} split: {result['users']} users, {result['n_queries']} queries",
             "", f"| setting | {m1} {arrow} | {m2} {arrow} |", "|---|---:|---:|"]
    for ref in result["reference"]:
        lines.append(f"| {ref['method']} (reference) | {ref['scores'][m1]:.3f} | {ref['scores'][m2]:.3f} |")
    for r in result["rows"]:
        chosen = " **(chosen)**" if all(r[k] == v for k, v in result["best"].items()) else ""
        lines.append(f"| lr {r['lr']:g}, {r['epochs']:g} ep, {r['target']}, r={r['rank']}{chosen} | "
                     f"{r['scores'][m1]:.3f} | {r['scores'][m2]:.3f} |")
    return "\n".join(lines)


def main() -> None:
    config, sweep = ConfigParser([PipelineConfig, SweepConfig]).parse_args_into_dataclasses()
    if config.split == "test":
        config.split = "dev"  # never tune on test users
    for task in sweep.tasks:
        start = time.perf_counter()
        result = sweep_task(config, sweep, task)
        result.update(machine=machine(), wall_seconds=round(time.perf_counter() - start, 1),
                      sweep=dataclasses.asdict(sweep))
        write_json(result_path(sweep, task), result)
        print("\n" + format_sweep(result) + "\n", flush=True)


if __name__ == "__main__":
    main()
