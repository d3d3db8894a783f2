"""The first query the Space shows for a task: one where personalization changes the answer.

It is the first held-out query, over the users with an adapter in data order, whose OPPU answer (``oppu-k0``)
differs from the non-personalized base's (``np-k0``) and matches the gold; else the first whose answers differ;
else the first query. The answers are read from the ``np-k0.json`` / ``oppu-k0.json`` prediction files of
``SpaceConfig.predictions_dir`` (``make demo`` and ``oppu-hub eval`` write them, with the Space's models), else
computed once, at start-up, for the queries of the first ``SpaceConfig.probe_users`` users."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .compare_config import SpaceError
from .data import Question, read_predictions
from .methods import SPACE_COLUMNS
from .tasks import Task, get_task

if TYPE_CHECKING:
    from .compare import Backend

Answers = dict[str, tuple[str, str]]  # question id -> (base answer, OPPU answer)
BASE, OPPU = SPACE_COLUMNS[0], SPACE_COLUMNS[2]  # the k=0 columns without and with the user's adapter


def default_query(backend: Backend, task: str) -> tuple[str, str] | None:
    """(user, question id) to show first for ``task``; ``None`` when no user has an adapter."""
    try:
        users = backend.users(task)
    except SpaceError:
        return None
    candidates = [(u, q) for u in users for q in backend.split(task).user_questions(u)]
    answers = predicted_answers(Path(backend.config.fill(backend.config.predictions_dir, task, 0)), candidates)
    if answers is None:
        candidates = [(u, q) for u, q in candidates if u in users[:backend.config.probe_users]]
        answers = probed_answers(backend, get_task(task), candidates)
    return pick_default(get_task(task), candidates, answers)


def predicted_answers(folder: Path, candidates: list[tuple[str, Question]]) -> Answers | None:
    """The candidates' answers in the prediction files of ``folder``; ``None`` without them."""
    base, oppu = (folder / f"{column.method(0).name}.json" for column in (BASE, OPPU))
    if not (base.is_file() and oppu.is_file()):
        return None
    try:
        base_answers, oppu_answers = read_predictions(base), read_predictions(oppu)
    except (OSError, ValueError):
        return None
    return {q.id: (base_answers[q.id], oppu_answers[q.id]) for _, q in candidates
            if q.id in base_answers and q.id in oppu_answers}


def probed_answers(backend: Backend, task: Task, candidates: list[tuple[str, Question]]) -> Answers:
    """The candidates' answers by the Space's own k=0 columns (generated)."""
    out = {}
    for user, q in candidates:
        answers = [backend.column(task, column, 0, q.fields(task), [], user,
                                  lambda k, user=user: backend.adapter_folder(task.name, user, k), "generate")
                   for column in (BASE, OPPU)]
        if all(a.note is None for a in answers):
            out[q.id] = (answers[0].answer, answers[1].answer)
    return out


def pick_default(task: Task, candidates: list[tuple[str, Question]], answers: Answers) -> tuple[str, str] | None:
    """The first candidate whose OPPU answer differs from the base's and matches the gold, else the first whose
    answers differ, else the first candidate."""
    def gold(q: Question) -> str | None:
        return (task.parse_output(q.gold) or q.gold) if q.gold is not None and task.labels else q.gold

    differ = [(u, q) for u, q in candidates if q.id in answers and answers[q.id][0] != answers[q.id][1]]
    right = [(u, q) for u, q in differ if answers[q.id][1] == gold(q)]
    chosen = (right or differ or candidates or [None])[0]
    return (chosen[0], chosen[1].id) if chosen else None


__all__ = ["default_query", "pick_default", "predicted_answers", "probed_answers"]
