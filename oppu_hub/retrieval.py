"""Retrieval over a user's history: BM25 top-k (``rank_bm25``), the time-respecting variant used to build
training prompts (only items strictly before the item being trained on), and the random-history baseline."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from rank_bm25 import BM25Okapi

from .tasks import Task

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (what BM25 indexes)."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class Retrieved:
    """A retrieved history item with its BM25 score (``None`` for random picks)."""

    item: dict[str, Any]
    score: float | None


class BM25Retriever:
    """BM25 over one user's history items, as the task renders them for indexing."""

    def __init__(self, task: Task, items: Sequence[Mapping[str, Any]]) -> None:
        self.task = task
        self.items = [dict(i) for i in items]
        self._bm25 = BM25Okapi([tokenize(task.item_text(i)) or ["<empty>"] for i in self.items]) if self.items else None

    def retrieve(self, query: str, k: int) -> list[Retrieved]:
        """The ``k`` items most relevant to ``query`` (ties broken by recency, newest first)."""
        if k <= 0 or self._bm25 is None:
            return []
        scores = self._bm25.get_scores(tokenize(query))
        order = sorted(range(len(self.items)), key=lambda i: (-scores[i], -i))
        return [Retrieved(self.items[i], float(scores[i])) for i in order[:k]]


def retrieve_before(task: Task, history: Sequence[Mapping[str, Any]], index: int, query: str, k: int
                    ) -> list[Retrieved]:
    """R(x^t_i, H^t_i, k): top-k of the items strictly before ``history[index]`` in time.

    ``history`` must be in time order (see :func:`oppu_hub.data.chronological`). When items carry dates, an
    item dated the same day as ``history[index]`` is not "before" it and is never returned.
    """
    if k <= 0 or index <= 0:
        return []
    date = history[index].get("date")
    earlier = [h for h in history[:index] if not date or not h.get("date") or str(h["date"]) < str(date)]
    return BM25Retriever(task, earlier).retrieve(query, k)


RANDOM_HISTORY_VERSION = 2  # 2: a query's own item in another user's history is never drawn (cached rows redone)


class RandomHistory:
    """The "random history" baseline: ``k`` items drawn from other users' histories (seeded)."""

    def __init__(self, histories: Mapping[str, Sequence[Mapping[str, Any]]], seed: int = 0,
                 keys: Callable[[Mapping[str, Any]], set[str]] | None = None) -> None:
        """``keys``: what identifies an item (:func:`oppu_hub.data.item_keys`), computed once per item, for
        :meth:`sample`'s ``leave_out``."""
        self._pool = [(user, dict(item), keys(item) if keys else set())
                      for user, items in histories.items() for item in items]
        self._seed = seed

    def sample(self, user_id: str, k: int, key: str = "", leave_out: Set[str] = frozenset()) -> list[Retrieved]:
        """``k`` random items of users other than ``user_id``, none whose keys meet ``leave_out`` (the query's own
        item in another user's history: :func:`oppu_hub.data.query_keys`); the same (user, key) draws the same
        items."""
        others = [item for user, item, ids in self._pool if user != user_id and leave_out.isdisjoint(ids)]
        rng = random.Random(f"{self._seed}:{user_id}:{key}")
        return [Retrieved(item, None) for item in rng.sample(others, min(k, len(others)))]
