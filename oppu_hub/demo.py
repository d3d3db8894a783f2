"""The main job on the embedded defaults (``make demo`` / ``oppu-hub demo``): build LaMP data from the public
sources, task-adapt the default base, train one adapter per test user, and compare non-personalized,
retrieval, OPPU and OPPU+retrieval on those users' held-out queries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .inference import Generator, PredictConfig, predict
from .models import DEFAULT_BASE, BaseModelConfig, load_base
from .tasks import get_task


@dataclass
class DemoConfig:
    """A small, CPU-sized OPPU run (minutes). Every step is reused when its output exists.

    Args:
        tasks: tasks to run.
        source_dir: the public source data (``../shared/data``).
        workdir: where data, bases, adapters and predictions go.
        base_model: the pretrained base.
        users: test users per task.
        k: retrieval depth of the RAG columns.
        base_examples: training examples for task adaptation.
        max_history: most recent history items per user adapter.
        base_lr / user_lr: learning rates (tuned on dev users for the 135M default; see README).
        user_epochs: epochs of each user adapter.
    """

    tasks: list[str] = field(default_factory=lambda: ["LaMP-2N", "LaMP-5"], metadata={"help": "tasks to run"})
    source_dir: str = field(default="../shared/data", metadata={"help": "public source data"})
    workdir: str = field(default="runs/demo", metadata={"help": "output folder"})
    base_model: str = field(default=DEFAULT_BASE, metadata={"help": "pretrained base"})
    users: int = field(default=3, metadata={"help": "test users per task"})
    k: int = field(default=1, metadata={"help": "retrieval depth"})
    base_examples: int = field(default=64, metadata={"help": "task-adaptation examples"})
    max_history: int = field(default=16, metadata={"help": "history items per user adapter"})
    base_lr: float = field(default=5e-4, metadata={"help": "task-adaptation learning rate"})
    user_lr: float = field(default=1e-3, metadata={"help": "user-adapter learning rate"})
    user_epochs: float = field(default=2.0, metadata={"help": "user-adapter epochs"})


def run_demo(config: DemoConfig) -> list[dict]:
    """Run the pipeline for each task and return one result row per (task, method)."""
    from trainers import BaseTaskConfig, UserAdapterConfig, train_base, train_users

    from .builders import BuildConfig, build, format_summary

    work = Path(config.workdir)
    data_dir = work / "data"
    print(format_summary(build(BuildConfig(config.source_dir, str(data_dir), tasks=config.tasks))))
    rows: list[dict] = []
    for name in config.tasks:
        task = get_task(name)
        common = dict(task=task.name, data_dir=str(data_dir))
        start = time.perf_counter()
        base_dir = train_base(BaseTaskConfig(**common, base_model=config.base_model, output_dir=str(work / "base"),
                                             max_examples=config.base_examples, num_train_epochs=1,
                                             learning_rate=config.base_lr))
        user_config = UserAdapterConfig(**common, base_dir=str(base_dir), output_dir=str(work / "users"),
                                        max_users=config.users, max_history=config.max_history,
                                        learning_rate=config.user_lr, num_train_epochs=config.user_epochs)
        report = train_users(user_config)
        if report.failed:
            raise RuntimeError(f"{task.name}: adapters failed for {report.failed}")
        trained_s = time.perf_counter() - start
        generator = Generator(*load_base(BaseModelConfig(str(base_dir))))
        methods = {"non-personalized (k=0)": (0, None), f"RAG (k={config.k})": (config.k, None),
                   "OPPU (k=0)": (0, user_config.adapters_dir()),
                   f"OPPU + RAG (k={config.k})": (config.k, user_config.adapters_dir())}
        for method, (k, adapters) in methods.items():
            _, path, scores = predict(PredictConfig(**common, base_dir=str(base_dir), k=k, max_users=config.users,
                                                    adapters_dir=str(adapters) if adapters else None), generator)
            rows.append({"task": task.name, "method": method, **(scores or {}), "predictions": str(path)})
        print(f"{task.name}: trained base + {len(report.trained)} adapters in {trained_s:.0f} s")
    return rows


def format_results(rows: list[dict]) -> str:
    """A Markdown table: one row per task and method with the task's two metrics."""
    lines = ["| task | method | metric 1 | metric 2 |", "|---|---|---|---|"]
    for row in rows:
        m1, m2 = get_task(row["task"]).metric_names
        lines.append(f"| {row['task']} | {row['method']} | {m1} {row[m1]:.3f} | {m2} {row[m2]:.3f} |")
    return "\n".join(lines)
