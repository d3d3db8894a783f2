"""The LaMP metrics, with the semantics of LaMP's official ``eval/evaluation.py``.

This file is the one implementation: the ``evaluate`` module beside it (``lamp_metric.py``, one config per entry of
:data:`TASKS`) and :func:`oppu_hub.metrics.score` both compute through it. It imports nothing from ``oppu_hub``, so
the folder can be pushed to the Hub as a metric Space on its own.

* classification: predictions and references are stripped and looked up in the label list; a prediction that is
  not a label counts as wrong for every class. Accuracy, and sklearn's macro-F1 over the whole label list.
* rating: a prediction that ``float`` cannot read becomes the rating farthest from its reference. MAE and RMSE.
* generation: ROUGE-1 and ROUGE-L F-measure (``rouge_score``, no stemming, as ``evaluate``'s rouge), the mean over
  examples.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

RATING_RANGE = (1.0, 5.0)  # LaMP-3's lowest and highest rating

NEWS_CATEGORIES = (
    "travel", "education", "parents", "style & beauty", "entertainment", "food & drink",
    "science & technology", "business", "sports", "healthy living", "women", "politics", "crime",
    "culture & arts", "religion",
)  # fmt: skip
MOVIE_TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy",
    "classic", "psychology", "fantasy", "romance", "thought-provoking", "social commentary",
    "violence", "true story",
)  # fmt: skip

# task (the evaluate module's config name) -> (kind, label list of a classification task)
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "LaMP-1": ("classification", ("[1]", "[2]")),
    "LaMP-2N": ("classification", NEWS_CATEGORIES),
    "LaMP-2M": ("classification", MOVIE_TAGS),
    "LaMP-3": ("rating", ()),
    "LaMP-4": ("generation", ()),
    "LaMP-5": ("generation", ()),
    "LaMP-7": ("generation", ()),
}


def compute(kind: Literal["classification", "rating", "generation"], predictions: Sequence[str],
            references: Sequence[str], labels: Sequence[str] = ()) -> dict[str, float]:
    """The two metrics of a task of ``kind`` (``labels``: the label list of a classification task)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if kind == "classification":
        return accuracy_f1(predictions, references, labels)
    if kind == "rating":
        return mae_rmse(predictions, references)
    if kind == "generation":
        return rouge(predictions, references)
    raise ValueError(f"unknown task kind {kind!r}")


def accuracy_f1(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over ``labels``; a reference that is not one of ``labels`` is an error."""
    from sklearn.metrics import f1_score

    index = {label: i for i, label in enumerate(labels)}
    y_pred = [index.get(str(p).strip(), -1) for p in predictions]
    y_true = []
    for ref in references:
        if str(ref).strip() not in index:
            raise ValueError(f"gold {ref!r} is not one of the task's labels {list(labels)}")
        y_true.append(index[str(ref).strip()])
    if not y_true:
        return {"accuracy": 0.0, "f1": 0.0}
    accuracy = sum(p == t for p, t in zip(y_pred, y_true, strict=True)) / len(y_true)
    f1 = f1_score(y_true, y_pred, labels=list(range(len(labels))), average="macro", zero_division=0)
    return {"accuracy": accuracy, "f1": float(f1)}


def mae_rmse(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """MAE and RMSE of ratings; an unreadable prediction counts as the rating farthest from its reference."""
    low, high = RATING_RANGE
    errors = []
    for pred, ref in zip(predictions, references, strict=True):
        try:
            gold = float(ref)
        except ValueError:
            raise ValueError(f"gold {ref!r} is not a rating") from None
        try:
            value = float(pred)
        except ValueError:
            value = low if abs(low - gold) > abs(high - gold) else high
        errors.append(value - gold)
    n = max(len(errors), 1)
    return {"mae": sum(abs(e) for e in errors) / n, "rmse": math.sqrt(sum(e * e for e in errors) / n)}


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    """One scorer for every call (the bootstrap scores each query on its own)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"])


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1 and ROUGE-L F-measure of each prediction against its reference."""
    scorer = _rouge_scorer()
    scores = [scorer.score(str(ref).strip(), str(pred).strip())
              for pred, ref in zip(predictions, references, strict=True)]
    n = max(len(scores), 1)
    return {"rouge-1": sum(s["rouge1"].fmeasure for s in scores) / n,
            "rouge-l": sum(s["rougeL"].fmeasure for s in scores) / n}
