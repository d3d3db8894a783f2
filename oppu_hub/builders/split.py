"""The LaMP-style time-based split shared by every builder, and the writing of a task folder.

1. Each user's items are sorted by ``(date, order)``; later copies of the same text (``Item.key``) are dropped.
2. The user's latest ``queries_per_user`` (Q) items that can be queries and have at least ``min_history`` items
   before them become queries. All of a user's queries share one profile: the items strictly before the
   *earliest* query (the ``max_history`` most recent when capped), which is also the history a user adapter
   trains on (:meth:`oppu_hub.data.LampSplit.user_history`). So no profile item is dated after any query of its
   user, and no query is another query's history. Users with no such item are left out.
3. Users split by user. Eligible users are ranked by history before their earliest query (ties by user id); the
   top ``test_users + dev_users`` form a pool, capped at ``max_test_fraction`` of the users (the cap shrinks
   test and dev in proportion) so thin sources keep train users. Dev takes one user, drawn with the seed, from
   each of ``n_dev`` equal slices of the ranked pool, so dev and test histories follow one distribution; the
   rest of the pool is test; train = the users outside the pool.
4. Leak guard for sources where one item belongs to several users (papers with coauthors): every test query
   item is removed from dev and train users' items, every dev query item from train users' items (a train or
   dev query that is such an item is dropped too), so no held-out answer is another split's training data.
"""

from __future__ import annotations

import hashlib
import random
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import SPLITS, LampSplit, Question, write_split
from ..tasks import Task
from .base import Item, SourceData

SPLIT_ORDER = ("test", "dev", "train")  # priority of the leak guard, and question-id order


@dataclass
class UserTimeline:
    """One user's chronological items and the positions of their queries."""

    user_id: str
    items: list[Item]
    queries: list[int]

    @property
    def history(self) -> int:
        """Items before the earliest query: the shared profile before ``max_history``, and the rank for test/dev."""
        return self.queries[0]


def timelines(data: SourceData, queries_per_user: int, min_history: int,
              dropped: Counter[str]) -> dict[str, UserTimeline]:
    """Sort, de-duplicate and pick each user's queries (step 1-2); users without a query are counted."""
    out: dict[str, UserTimeline] = {}
    for user in sorted(data.users):
        items, seen = [], set()
        for item in sorted(data.users[user], key=lambda i: (i.date, i.order)):
            if item.key and item.key in seen:
                dropped["repeated text of the same user (earliest kept)"] += 1
                continue
            seen.add(item.key)
            items.append(item)
        eligible = [i for i, item in enumerate(items) if item.query is not None and i >= min_history]
        if not eligible:
            dropped[f"users with fewer than {min_history} items before a possible query"] += 1
            continue
        out[user] = UserTimeline(user, items, eligible[-queries_per_user:])
    return out


def assign_users(users: dict[str, UserTimeline], *, test_users: int, dev_users: int,
                 max_test_fraction: float, seed: int, task: str) -> dict[str, list[str]]:
    """Step 3: ``{split: sorted user ids}``."""
    ranked = sorted(users, key=lambda u: (-users[u].history, u))
    wanted = test_users + dev_users
    n_pool = min(wanted, int(max_test_fraction * len(ranked)))
    n_dev = round(n_pool * dev_users / wanted) if wanted else 0
    if dev_users and n_pool >= 2:
        n_dev = max(n_dev, 1)
    n_dev = min(n_dev, max(n_pool - 1, 0))  # test keeps at least one user
    pool = ranked[:n_pool]
    rng = random.Random(f"{seed}:{task}:dev")
    dev = {pool[rng.randrange(n_pool * k // n_dev, n_pool * (k + 1) // n_dev)] for k in range(n_dev)}
    return {"test": sorted(u for u in pool if u not in dev), "dev": sorted(dev), "train": sorted(ranked[n_pool:])}


def make_questions(task: Task, users: dict[str, UserTimeline], assignment: dict[str, list[str]], *,
                   min_history: int, max_history: int | None,
                   dropped: Counter[str]) -> dict[str, list[Question]]:
    """Step 4 and the questions of every split (ids numbered across splits in test, dev, train order)."""
    held_out: set[str] = set()
    questions: dict[str, list[Question]] = {}
    counter = 0
    for split in SPLIT_ORDER:
        questions[split] = []
        new_held: set[str] = set()
        for user_id in assignment[split]:
            tl = users[user_id]
            query_ids = {id(tl.items[i]) for i in tl.queries}
            items = tl.items
            if held_out:
                kept = [it for it in items if it.id not in held_out]
                if len(kept) != len(items):
                    dropped["items removed: held-out query of a higher-priority split"] += len(items) - len(kept)
                items = kept
            positions = [i for i, it in enumerate(items) if id(it) in query_ids]
            if len(positions) != len(tl.queries):
                dropped["queries removed: held-out query of a higher-priority split"] += (
                    len(tl.queries) - len(positions))
            short = [i for i in positions if i < min_history]
            if short:
                dropped["queries removed: history below min_history after the leak guard"] += len(short)
                positions = [i for i in positions if i >= min_history]
            if not positions:
                continue
            first = positions[0]  # every query's profile: the items before the user's earliest query
            start = 0 if max_history is None else max(0, first - max_history)
            profile = [it.profile_item() for it in items[start:first]]
            for pos in positions:
                item = items[pos]
                fields, gold = item.query  # type: ignore[misc]
                questions[split].append(Question(
                    id=str(counter), input=task.format_input(**fields), profile=list(profile),
                    user_id=user_id, gold=gold))
                counter += 1
                if split != "train":
                    new_held.add(item.id)
        held_out |= new_held
    return questions


def split_stats(questions: list[Question]) -> dict[str, Any]:
    lengths = [len(q.profile) for q in questions]
    return {
        "users": len({q.user_id for q in questions}),
        "queries": len(questions),
        "history_mean": round(statistics.fmean(lengths), 2) if lengths else 0,
        "history_min": min(lengths, default=0),
        "history_max": max(lengths, default=0),
    }


def write_task_files(task: Task, questions: dict[str, list[Question]], folder: Path) -> dict[str, str]:
    """Write every split with :func:`oppu_hub.data.write_split`; return ``{file name: sha256}``."""
    hashes = {}
    for split in SPLITS:
        for path in write_split(LampSplit(task, questions[split]), folder, split):
            hashes[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(hashes.items()))


def content_hash(file_hashes: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name, digest in sorted(file_hashes.items()):
        h.update(f"{name}\t{digest}\n".encode())
    return h.hexdigest()
