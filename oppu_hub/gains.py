"""Where a method gains, read from a leaderboard's own files (``{leaderboard}/predictions/{task}/``: each method's
LaMP-format predictions, ``golds.json`` and ``users.json``): no model is loaded and nothing is re-predicted, so an
analysis always describes the committed table.

* :func:`bucket_gains`: users cut into equal-count buckets by history length (the paper's active levels, Figure 3),
  each bucket's scores and a method's difference to a reference with a paired bootstrap interval over its users.
* :func:`user_outcomes`: how many users a method helps, hurts or leaves unchanged against a reference, by each
  user's own score on the task's first metric.

``oppu-hub analyze active-levels`` and ``user-gains`` (:func:`active_levels`, :func:`user_gains`) plot and tabulate
them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .analyses_config import ActiveLevelsConfig, LeaderboardAnalysisConfig
from .data import load_task_split, read_predictions
from .io import read_json
from .metrics import score
from .report import figure, headline, write_result
from .stats import PairedBootstrap
from .tasks import Task, get_task


@dataclass
class TaskPredictions:
    """One task's files in a leaderboard: golds, the query -> user map and each found method's predictions."""

    task: Task
    golds: dict[str, str]
    users: dict[str, str]
    methods: dict[str, dict[str, str]]

    @classmethod
    def load(cls, leaderboard: str | Path, task: str, methods: Sequence[str]) -> TaskPredictions | None:
        """The task's files (``None`` when the leaderboard has no predictions of it); methods without a file are
        left out."""
        task_ = get_task(task)
        folder = Path(leaderboard) / "predictions" / task_.name
        if not (folder / "golds.json").is_file():
            return None
        found = {m: read_predictions(folder / f"{m}.json") for m in methods if (folder / f"{m}.json").is_file()}
        return cls(task_, read_predictions(folder / "golds.json"), read_json(folder / "users.json"), found)

    def user_ids(self) -> list[str]:
        return list(dict.fromkeys(self.users[q] for q in self.golds))

    def queries(self, users: Sequence[str]) -> dict[str, str]:
        """The golds of ``users``' queries."""
        chosen = set(users)
        return {q: g for q, g in self.golds.items() if self.users[q] in chosen}

    def headline(self, method: str, golds: Mapping[str, str]) -> float:
        """``method``'s first metric on the queries of ``golds``."""
        return score(self.task, self.methods[method], golds)[self.task.metric_names[0]]


def bucket_users(lengths: dict[str, int], n: int) -> list[list[str]]:
    """Users sorted by history length and cut into ``n`` (nearly) equal-count buckets, least active first."""
    ordered = sorted(lengths, key=lambda u: (lengths[u], u))
    n = max(1, min(n, len(ordered)))
    return [ordered[len(ordered) * i // n: len(ordered) * (i + 1) // n] for i in range(n)]


def bucket_gains(preds: TaskPredictions, lengths: dict[str, int], buckets: int,
                 pairs: Sequence[tuple[str, str]], resamples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Per activity bucket: its users, their history-length span, each method's first metric and, for each
    ``(method, reference)`` pair whose files exist, the difference with its paired bootstrap interval over the
    bucket's users."""
    metric = preds.task.metric_names[0]
    out = []
    for bucket in bucket_users({u: lengths[u] for u in preds.user_ids()}, buckets):
        golds = preds.queries(bucket)
        boot = PairedBootstrap(preds.task, golds, preds.users, resamples, seed)
        sums = {m: boot.user_sums(p) for m, p in preds.methods.items()}
        gains = {f"{a} - {b}": boot.compare(sums[a], sums[b])[metric] for a, b in pairs if a in sums and b in sums}
        out.append({"users": len(bucket), "history": (min(lengths[u] for u in bucket), max(lengths[u] for u in bucket)),
                    "queries": len(golds), "scores": {m: preds.headline(m, golds) for m in preds.methods},
                    "gains": gains})
    return out


def user_outcomes(preds: TaskPredictions, method: str, reference: str) -> dict[str, int]:
    """How many users ``method`` helps, hurts or leaves unchanged against ``reference`` (each user's first metric
    on their own queries; "helps" is the better direction of the metric)."""
    sign = 1 if preds.task.higher_is_better else -1
    counts = {"helped": 0, "hurt": 0, "unchanged": 0}
    for user in preds.user_ids():
        golds = preds.queries([user])
        diff = sign * (preds.headline(method, golds) - preds.headline(reference, golds))
        counts["helped" if diff > 1e-12 else "hurt" if diff < -1e-12 else "unchanged"] += 1
    return counts


# --- active levels (Figure 3) and per-user gains, from a leaderboard's files ------------------------------------
def leaderboard_predictions(config: LeaderboardAnalysisConfig) -> list[TaskPredictions]:
    """The files of ``config``'s tasks in its leaderboard (tasks without predictions left out; none is an error)."""
    methods = sorted({m for pair in config.comparisons() for m in pair})
    found = [TaskPredictions.load(config.leaderboard, t, methods) for t in config.tasks]
    if not any(found):
        raise ValueError(f"{config.leaderboard}: no predictions of {', '.join(config.tasks)} (run oppu-hub eval)")
    return [p for p in found if p is not None]


def _interval(iv: Any) -> str:
    return f"{iv.diff:+.3f}" + (f" [{iv.low:+.3f}, {iv.high:+.3f}]" if iv.low is not None else "")


def active_levels(config: ActiveLevelsConfig) -> dict[str, Any]:
    """The paper's Figure 3 on the leaderboard's users (history lengths from ``--data_dir``'s evaluated split)."""
    pairs = [f"{a} - {b}" for a, b in config.comparisons()]
    header = ["task", "bucket", "users", "history items", "queries", *pairs]
    rows, plots = [], []
    for preds in leaderboard_predictions(config):
        split = load_task_split(config.data_dir, preds.task, config.split)
        lengths = {u: len(split.user_history(u)) for u in preds.user_ids()}
        buckets = bucket_gains(preds, lengths, config.buckets, config.comparisons(), config.resamples,
                               config.bootstrap_seed)
        for i, b in enumerate(buckets):
            rows.append([preds.task.name, i + 1, b["users"], "{}-{}".format(*b["history"]), b["queries"],
                         *(_interval(b["gains"][p]) if p in b["gains"] else "–" for p in pairs)])
        plots.append((preds.task.name, buckets))
    fig, axes = figure(len(plots), width=4.5)
    for ax, (task, buckets) in zip(axes, plots, strict=True):
        shown = [p for p in pairs if all(p in b["gains"] for b in buckets)]
        width = 0.8 / max(len(shown), 1)
        for j, p in enumerate(shown):
            ivs = [b["gains"][p] for b in buckets]
            err = [[iv.diff - (iv.low if iv.low is not None else iv.diff) for iv in ivs],
                   [(iv.high if iv.high is not None else iv.diff) - iv.diff for iv in ivs]]
            ax.bar([i + j * width for i in range(len(buckets))], [iv.diff for iv in ivs], width, yerr=err,
                   capsize=2, label=p)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks([i + width * (len(shown) - 1) / 2 for i in range(len(buckets))],
                      ["{}-{}".format(*b["history"]) for b in buckets], fontsize=7)
        ax.set_xlabel("history items")
        ax.set_ylabel(f"{headline(task)} difference")
        ax.set_title(f"{task}: gain by user activity", fontsize=9)
        ax.legend(fontsize=6)
    return write_result(config, "active-levels", header, rows, fig)


def user_gains(config: LeaderboardAnalysisConfig) -> dict[str, Any]:
    """For each task and comparison, how many users the method helps, hurts or leaves unchanged."""
    header = ["task", "comparison", "users", "helped", "hurt", "unchanged"]
    rows = []
    for preds in leaderboard_predictions(config):
        for a, b in config.comparisons():
            if a in preds.methods and b in preds.methods:
                counts = user_outcomes(preds, a, b)
                rows.append([preds.task.name, f"{a} vs {b}", sum(counts.values()), counts["helped"], counts["hurt"],
                             counts["unchanged"]])
    fig, axes = figure(1, width=max(6.0, 0.5 * len(rows)), height=4.5)
    ax = axes[0]
    labels = [f"{r[0]}\n{r[1]}" for r in rows]
    bottom = [0] * len(rows)
    for column, color in ((3, "tab:green"), (5, "tab:gray"), (4, "tab:red")):
        values = [r[column] / r[2] for r in rows]
        ax.bar(range(len(rows)), values, bottom=bottom, color=color, label=header[column])
        bottom = [x + v for x, v in zip(bottom, values, strict=True)]
    ax.set_xticks(range(len(rows)), labels, fontsize=6, rotation=90)
    ax.set_ylabel("share of users")
    ax.set_title("Per-user outcome against the reference (first metric of each task)", fontsize=9)
    ax.legend(fontsize=7)
    return write_result(config, "user-gains", header, rows, fig)
