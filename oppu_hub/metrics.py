"""LaMP metrics for oppu-hub's predictions, computed by the one implementation in :mod:`oppu_hub.lamp_metric`.

:func:`score` normalises answers with the task's parser (:meth:`Task.parse_output`: ``"Politics."`` ->
``politics``, ``"4 stars"`` -> ``4``), then computes through :func:`oppu_hub.lamp_metric.core.compute`, which has
the semantics of LaMP's official ``eval/evaluation.py`` and is also what the ``evaluate`` module
(:func:`load_metric`) computes with:

* classification (LaMP-1, 2N, 2M): accuracy and macro-F1 over the task's whole label set (sklearn); an answer that
  names no label counts as wrong for every class.
* rating (LaMP-3): MAE and RMSE; an unparseable answer counts as the rating farthest from the gold.
* generation (LaMP-4, 5, 7): ROUGE-1 and ROUGE-L F-measure (``rouge_score``, no stemming), averaged over examples;
  answers are scored as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .lamp_metric import PATH
from .lamp_metric.core import compute
from .tasks import Task, get_task

if TYPE_CHECKING:
    from evaluate import EvaluationModule


def score(task: Task | str, predictions: Mapping[str, str], golds: Mapping[str, str]) -> dict[str, float]:
    """Score ``{id: output}`` predictions against ``{id: gold}``; every gold id needs a prediction."""
    task = get_task(task)
    missing = [i for i in golds if i not in predictions]
    if missing:
        raise ValueError(f"{task.name}: no prediction for {len(missing)} gold ids, e.g. {missing[:5]}")
    preds = [predictions[i] for i in golds]
    refs = list(golds.values())
    if task.kind != "generation":  # an unreadable answer is wrong; an unreadable gold is reported as given
        preds = [task.parse_output(p) or "" for p in preds]
        refs = [task.parse_output(r) or r for r in refs]
    try:
        return compute(task.kind, preds, refs, task.labels)
    except ValueError as e:
        raise ValueError(f"{task.name}: {e}") from None


def load_metric(task: Task | str, **kwargs: Any) -> EvaluationModule:
    """The task's LaMP metric as an ``evaluate`` module, loaded offline from the package folder (``kwargs`` go to
    ``evaluate.load``). It scores raw strings, without :func:`score`'s answer normalisation."""
    import evaluate  # imports torch: metrics stays torch-free for score()

    return evaluate.load(str(PATH), get_task(task).name, **kwargs)
