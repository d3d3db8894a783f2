"""Paired bootstrap confidence intervals over users for metric differences between two methods.

Each resample draws the evaluated users with replacement and keeps all their queries, so the interval reflects
that queries of one user are not independent. Both methods are scored on the same resamples (paired), and every
metric is recomputed on each resample from additive per-query statistics: corpus-level ones such as macro-F1
exactly as :func:`oppu_hub.metrics.score` computes them on the full sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .metrics import score
from .tasks import Task, get_task

LEVEL = 0.95  # the default confidence level


@dataclass(frozen=True)
class Interval:
    """A metric difference ``a - b`` on all queries and its bootstrap confidence interval (``None`` with fewer
    than two users, where resampling users cannot say anything)."""

    diff: float
    low: float | None
    high: float | None

    def significant(self, higher_is_better: bool) -> bool:
        """Whether the interval excludes 0 on the better side (``a`` is significantly better than ``b``)."""
        if self.low is None or self.high is None:
            return False
        return self.low > 0 if higher_is_better else self.high < 0


def query_stats(task: Task | str, predictions: Mapping[str, str], golds: Mapping[str, str]) -> np.ndarray:
    """Additive per-query statistics of the task's metrics, one row per gold id in ``golds``' order: a count,
    then per kind (correct, per-class gold/predicted/true-positive counts), (|error|, error²) or
    (ROUGE-1, ROUGE-L); :func:`corpus_metrics` turns their sums into the metrics."""
    task = get_task(task)
    missing = [i for i in golds if i not in predictions]
    if missing:
        raise ValueError(f"{task.name}: no prediction for {len(missing)} gold ids, e.g. {missing[:5]}")
    if task.kind != "classification":
        rows = []
        for i in golds:
            one = score(task, {i: predictions[i]}, {i: golds[i]})
            rows.append([1.0, one["mae"], one["mae"] ** 2] if task.kind == "rating" else
                        [1.0, one["rouge-1"], one["rouge-l"]])
        return np.array(rows, dtype=float).reshape(len(golds), 3)
    index = {label: c for c, label in enumerate(task.labels)}
    n_labels = len(index)
    out = np.zeros((len(golds), 2 + 3 * n_labels))
    for row, i in enumerate(golds):
        true = index.get(task.parse_output(golds[i]) or "")
        if true is None:
            raise ValueError(f"{task.name}: gold {golds[i]!r} is not one of the task's labels {list(task.labels)}")
        pred = index.get(task.parse_output(predictions[i]) or "", -1)
        out[row, :2] = 1.0, float(pred == true)
        out[row, 2 + true] = 1.0
        if pred >= 0:
            out[row, 2 + n_labels + pred] = 1.0
            out[row, 2 + 2 * n_labels + pred] = float(pred == true)
    return out


def corpus_metrics(task: Task | str, sums: np.ndarray) -> dict[str, np.ndarray]:
    """The task's metrics from summed :func:`query_stats` rows (the last axis; any leading axes are kept)."""
    task = get_task(task)
    n = sums[..., 0]
    if task.kind == "classification":
        n_labels = len(task.labels)
        gold, pred, tp = (sums[..., 2 + j * n_labels:2 + (j + 1) * n_labels] for j in range(3))
        support = gold + pred  # 2 tp + fp + fn; a label never seen nor predicted scores 0, as in sklearn
        f1 = np.divide(2 * tp, support, out=np.zeros_like(tp), where=support > 0).mean(axis=-1)
        values = (sums[..., 1] / n, f1)
    elif task.kind == "rating":
        values = (sums[..., 1] / n, np.sqrt(sums[..., 2] / n))
    else:
        values = (sums[..., 1] / n, sums[..., 2] / n)
    return dict(zip(task.metric_names, values, strict=True))


class PairedBootstrap:
    """Resamples of one task's evaluated users, shared by every comparison on those queries.

    Args:
        task: the task (its metrics are compared).
        golds: ``{question id: gold}`` of the evaluated queries.
        users: ``{question id: user id}`` for (at least) those queries.
        resamples: bootstrap resamples.
        seed: seeds the resamples (same seed, same intervals).
        level: confidence level of the percentile interval.
    """

    def __init__(self, task: Task | str, golds: Mapping[str, str], users: Mapping[str, str], resamples: int = 1000,
                 seed: int = 0, level: float = LEVEL) -> None:
        self.task = get_task(task)
        self.golds = dict(golds)
        unknown = [i for i in self.golds if i not in users]
        if unknown:
            raise ValueError(f"{self.task.name}: no user for queries {unknown[:5]}")
        names = list(dict.fromkeys(users[i] for i in self.golds))
        position = {u: j for j, u in enumerate(names)}
        self._owner = np.array([position[users[i]] for i in self.golds], dtype=int)
        self.n_users = len(names)
        self.level = level
        draws = np.random.default_rng(seed).integers(0, self.n_users, size=(resamples, self.n_users))
        self._counts = np.zeros((resamples, self.n_users))
        np.add.at(self._counts, (np.arange(resamples)[:, None], draws), 1.0)

    @property
    def n_queries(self) -> int:
        return len(self.golds)

    def user_sums(self, predictions: Mapping[str, str]) -> np.ndarray:
        """A method's :func:`query_stats` summed per user (``users × statistics``), the input of :meth:`compare`."""
        stats = query_stats(self.task, predictions, self.golds)
        sums = np.zeros((self.n_users, stats.shape[1]))
        np.add.at(sums, self._owner, stats)
        return sums

    def compare(self, a: np.ndarray, b: np.ndarray) -> dict[str, Interval]:
        """``metric(a) - metric(b)`` with its confidence interval, for each of the task's metrics; ``a`` and ``b``
        are :meth:`user_sums` of two methods."""
        full_a, full_b = corpus_metrics(self.task, a.sum(axis=0)), corpus_metrics(self.task, b.sum(axis=0))
        resampled_a = corpus_metrics(self.task, self._counts @ a)
        resampled_b = corpus_metrics(self.task, self._counts @ b)
        tail = (1 - self.level) / 2
        out = {}
        for metric in self.task.metric_names:
            diff = float(full_a[metric] - full_b[metric])
            if self.n_users < 2:
                out[metric] = Interval(diff, None, None)
                continue
            low, high = np.quantile(resampled_a[metric] - resampled_b[metric], [tail, 1 - tail])
            out[metric] = Interval(diff, float(low), float(high))
        return out
