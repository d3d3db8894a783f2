"""LaMP metrics, computed the way LaMP's official evaluation does.

* classification (LaMP-1, 2N, 2M): accuracy and macro-F1 over the task's whole label set (``sklearn``, which
  ``evaluate``'s f1 wraps); an answer that names no label counts as wrong for every class.
* rating (LaMP-3): MAE and RMSE; an unparseable answer counts as the rating farthest from the gold.
* generation (LaMP-4, 5, 7): ROUGE-1 and ROUGE-L F-measure (``rouge_score``, which ``evaluate``'s rouge wraps;
  ``evaluate.load("rouge")`` needs the Hub), averaged over examples, no stemming as in ``evaluate``'s default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .tasks import Task, get_task


def score(task: Task | str, predictions: Mapping[str, str], golds: Mapping[str, str]) -> dict[str, float]:
    """Score ``{id: output}`` predictions against ``{id: gold}``; every gold id needs a prediction."""
    task = get_task(task)
    missing = [i for i in golds if i not in predictions]
    if missing:
        raise ValueError(f"{task.name}: no prediction for {len(missing)} gold ids, e.g. {missing[:5]}")
    ids = list(golds)
    preds = [predictions[i] for i in ids]
    refs = [golds[i] for i in ids]
    if task.kind == "classification":
        return _classification(task, preds, refs)
    if task.kind == "rating":
        return _rating(task, preds, refs)
    return _rouge(preds, refs)


def _classification(task: Task, preds: list[str], refs: list[str]) -> dict[str, float]:
    from sklearn.metrics import f1_score

    index = {label: i for i, label in enumerate(task.labels)}

    def to_index(text: str) -> int:
        return index.get(task.parse_output(text) or "", -1)

    y_pred = [to_index(p) for p in preds]
    y_true = [to_index(r) for r in refs]
    if -1 in y_true:
        bad = refs[y_true.index(-1)]
        raise ValueError(f"{task.name}: gold {bad!r} is not one of the task's labels {list(task.labels)}")
    accuracy = sum(p == t for p, t in zip(y_pred, y_true, strict=True)) / len(y_true) if y_true else 0.0
    f1 = f1_score(y_true, y_pred, labels=list(range(len(task.labels))), average="macro", zero_division=0)
    return {"accuracy": accuracy, "f1": float(f1)}


def _rating(task: Task, preds: list[str], refs: list[str]) -> dict[str, float]:
    errors = []
    for pred, ref in zip(preds, refs, strict=True):
        gold = float(ref)
        parsed = task.parse_output(pred)
        value = float(parsed) if parsed is not None else (1.0 if abs(1 - gold) > abs(5 - gold) else 5.0)
        errors.append(value - gold)
    n = max(len(errors), 1)
    return {"mae": sum(abs(e) for e in errors) / n, "rmse": math.sqrt(sum(e * e for e in errors) / n)}


def _rouge(preds: list[str], refs: list[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"])
    scores = [scorer.score(ref, pred) for pred, ref in zip(preds, refs, strict=True)]
    n = max(len(scores), 1)
    return {"rouge-1": sum(s["rouge1"].fmeasure for s in scores) / n,
            "rouge-l": sum(s["rougeL"].fmeasure for s in scores) / n}
