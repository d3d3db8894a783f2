"""Model-free baselines (the leaderboard's "Baselines" columns) and the pooled-history view that trains the
"Pooled" column's single adapter.

=================  =====================================================================  ==================
baseline           prediction for every query of a user                                   tasks
=================  =====================================================================  ==================
``majority``       the most frequent gold label of the *train* split (ties: the task's    LaMP-1, 2N, 2M, 3
                   label order); LaMP-3: the mean train gold rating, rounded half up
``user-majority``  the most frequent label of the user's history (ties: the label seen    LaMP-2N, 2M, 3
                   most recently); LaMP-3: the user's mean history rating, rounded half up
``bm25-copy``      the output side of the query's BM25 top-1 history item (the item       all but LaMP-1
                   ``rag-k1`` puts in its prompt): its title (LaMP-4, 5), its text
                   (LaMP-7), its label (LaMP-2N, 2M, 3)
=================  =====================================================================  ==================

LaMP-1's history items are papers without an answer, so only ``majority`` is defined there. Ratings are written
as whole numbers because LaMP-3's metric reads the first digit of an answer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .data import LampSplit, Question, chronological, item_keys, newest_items, query_keys
from .retrieval import BM25Retriever
from .tasks import Task

BASELINES = ("majority", "user-majority", "bm25-copy")
POOLED_USER = "pooled"
# Bumped whenever :func:`pooled_split` writes different items for the same inputs, so cached pooled views are
# written again (2: evaluated queries left out).
POOLED_VIEW_VERSION = 2


def applies(name: str, task: Task) -> bool:
    """Whether baseline ``name`` is defined for ``task`` (the leaderboard shows "–" where it is not)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    if name == "majority":
        return task.kind != "generation"
    if name == "user-majority":
        return task.has_pairs and task.kind != "generation"
    return task.has_pairs or task.kind == "generation"


def predict_baseline(name: str, split: LampSplit, users: Sequence[str], train: LampSplit) -> dict[str, str]:
    """Predictions ``{question id: output}`` of baseline ``name`` for every query of ``users`` in ``split``;
    ``train`` is the training split (read by ``majority`` only)."""
    if not applies(name, split.task):
        raise ValueError(f"baseline {name!r} is not defined for {split.task.name}")
    if name == "majority":
        label = global_majority(train)
        return {q.id: label for u in users for q in split.user_questions(u)}
    if name == "user-majority":
        return user_majority(split, users)
    return bm25_copy(split, users)


def global_majority(train: LampSplit) -> str:
    """The most frequent parseable gold label of ``train`` (ties: the task's label order); for a rating task
    the mean gold rating, rounded half up."""
    task = train.task
    golds = [label for q in train.questions if (label := task.parse_output(q.gold or "")) is not None]
    if not golds:
        raise ValueError(f"{task.name} {train.source or 'train split'}: no gold labels for the majority baseline")
    if task.kind == "rating":
        return _rounded_mean(golds)
    counts = Counter(golds)
    return max(task.labels, key=lambda label: counts[label])


def user_majority(split: LampSplit, users: Sequence[str]) -> dict[str, str]:
    """Each user's most frequent history label (ties: the most recent one) for all their queries; for a rating
    task the user's mean history rating, rounded half up. The history is :meth:`LampSplit.user_history`."""
    task = split.task
    predictions = {}
    for user in users:
        labels = [task.item_answer(item) for item in split.user_history(user)]
        guess = _rounded_mean(labels) if task.kind == "rating" else _most_frequent(labels)
        predictions.update({q.id: guess for q in split.user_questions(user)})
    return predictions


def bm25_copy(split: LampSplit, users: Sequence[str]) -> dict[str, str]:
    """For each query, the output side of the BM25 top-1 item of its history (``question.profile``, as RAG
    retrieves): the item's answer on pair tasks, its text on LaMP-7."""
    task = split.task
    predictions = {}
    for user in users:
        for q in split.user_questions(user):
            top = BM25Retriever(task, q.profile).retrieve(task.query_text(q.fields(task)), 1)
            predictions[q.id] = _output_side(task, top[0].item) if top else ""
    return predictions


def pooled_split(split: LampSplit, users: Sequence[str], max_history: int | None = None) -> LampSplit:
    """A one-user view for the pooled adapter: the (most recent ``max_history``) history of each of ``users``,
    concatenated in time order (by date when every item has one) as the history of one question of user
    :data:`POOLED_USER`; item ids are prefixed with their user so they stay unique.

    An item that is one of the evaluated queries (:func:`oppu_hub.data.query_keys`: a co-authored LaMP-5 paper can
    be one user's query and another user's history item) is left out, so the pooled adapter never trains on a
    query's answer."""
    if not users:
        raise ValueError("the pooled adapter needs at least one user")
    queries = query_keys(split.task, [q for user in users for q in split.user_questions(user)])
    items = []
    for user in users:
        items += [{**item, "id": f"{user}/{item['id']}"} for item in newest_items(split.user_history(user), max_history)
                  if queries.isdisjoint(item_keys(split.task, item))]
    first = split.user_questions(users[0])[0]  # a valid input and gold; training reads only the history
    return LampSplit(split.task, [Question(POOLED_USER, first.input, chronological(items), POOLED_USER, first.gold)])


def _output_side(task: Task, item: dict[str, Any]) -> str:
    return task.item_answer(item) if task.has_pairs else task.item_text(item)


def _most_frequent(labels: Sequence[str]) -> str:
    counts = Counter(labels)
    top = max(counts.values())
    return next(label for label in reversed(labels) if counts[label] == top)


def _rounded_mean(ratings: Sequence[str]) -> str:
    return str(math.floor(sum(float(r) for r in ratings) / len(ratings) + 0.5))
