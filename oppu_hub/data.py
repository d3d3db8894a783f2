"""LaMP-format data: read and validate ``*_questions.json`` / ``*_outputs.json``, write predictions, and
expose users' histories and queries as Python objects and as Hugging Face ``datasets``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .io import TargetExistsError, read_json, write_json
from .tasks import TASKS, Task, get_task

SPLITS = ("train", "dev", "test")
T = TypeVar("T")


class LampDataError(ValueError):
    """A LaMP file is malformed; the message names the file and the item."""


@dataclass
class Question:
    """One LaMP query: the official ``input`` string and the user's history (``profile``)."""

    id: str
    input: str
    profile: list[dict[str, Any]]
    user_id: str
    gold: str | None = None

    def fields(self, task: Task) -> dict[str, str]:
        """The query's fields (``text``, ``title``...) parsed out of its official input."""
        return task.parse_input(self.input)


@dataclass
class LampSplit:
    """A task's questions (with golds when known), grouped by user."""

    task: Task
    questions: list[Question]
    source: str = ""
    _by_user: dict[str, list[Question]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_user = {}
        for q in self.questions:
            self._by_user.setdefault(q.user_id, []).append(q)

    @property
    def user_ids(self) -> list[str]:
        return list(self._by_user)

    @property
    def has_golds(self) -> bool:
        return all(q.gold is not None for q in self.questions)

    def select_users(self, users: Iterable[str] | None = None, max_users: int | None = None) -> list[str]:
        """The requested users (each checked to exist), or all users, cut to the first ``max_users``."""
        chosen = list(users) if users else self.user_ids
        for u in chosen:
            self.user_questions(u)  # raises a clear KeyError for an unknown user
        return chosen[:max_users] if max_users else chosen

    def user_questions(self, user_id: str) -> list[Question]:
        if user_id not in self._by_user:
            raise KeyError(f"user {user_id!r} is not in {self.task.name} {self.source or 'data'}")
        return self._by_user[user_id]

    def user_history(self, user_id: str) -> list[dict[str, Any]]:
        """The user's history that is safe for every one of their queries: the profile of their earliest
        query (later queries' profiles may contain earlier queries' answers), in time order."""
        questions = self.user_questions(user_id)
        return chronological(min(questions, key=lambda q: len(q.profile)).profile)

    def to_dataset(self):
        """The questions as a ``datasets.Dataset`` (id, user_id, input, output, profile as JSON text)."""
        from datasets import Dataset  # pyarrow and pandas: too heavy for every command that reads data

        return Dataset.from_dict({
            "id": [q.id for q in self.questions],
            "user_id": [q.user_id for q in self.questions],
            "input": [q.input for q in self.questions],
            "output": [q.gold for q in self.questions],
            "profile": [json.dumps(q.profile, ensure_ascii=False) for q in self.questions],
        })


def chronological(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Items in time order: by ``date`` when every item has one (stable), else as given."""
    items = [dict(i) for i in items]
    if items and all(i.get("date") not in (None, "") for i in items):
        return sorted(items, key=lambda i: str(i["date"]))
    return items


def newest_items(history: Iterable[T], n: int | None) -> list[T]:
    """The newest ``n`` items of a history in time order (its last ``n``, as :meth:`LampSplit.user_history` gives
    it); all of it when ``n`` is ``None`` or 0."""
    items = list(history)
    return items[-n:] if n else items


def query_keys(task: Task, questions: Iterable[Question]) -> set[str]:
    """What makes a history item one of ``questions`` (a co-authored LaMP-5 paper can be one user's query and
    another user's history item): the query's main input field (a LaMP-5 abstract, a LaMP-4 article, a LaMP-1 paper
    title) and, where history items are unpaired text, the gold (a LaMP-7 tweet); case and spacing aside."""
    questions = list(questions)
    keys = {_key(q.fields(task)[task.query_fields[0]]) for q in questions}
    if not task.has_pairs:
        keys |= {_key(q.gold) for q in questions if q.gold}
    return keys - {""}


def item_keys(task: Task, item: Mapping[str, Any]) -> set[str]:
    """The keys of a history item that :func:`query_keys` are compared with."""
    fields = task.item_fields(item)
    return {_key(fields.get(task.query_fields[0], "")), _key(task.item_text(item))}


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def file_task_name(task: Task) -> str:
    """The ``task`` name this project writes into prediction and gold files: ``LaMP_1``, ``LaMP_2N``, ``LaMP_2M``,
    ``LaMP_3`` ... (OPPU's evaluation script scores all seven by these names; LaMP's own calls LaMP-2M ``LaMP_2``
    and has no name for LaMP-2N: docs/metrics.md)."""
    return task.name.replace("-", "_")


def _task_names(task: Task) -> tuple[str, ...]:
    """The ``task`` names a file of ``task`` may carry: :func:`file_task_name` and LaMP's own (``LaMP_2`` for both
    LaMP-2N and LaMP-2M, as files written before and LaMP's own files say)."""
    return tuple(dict.fromkeys((file_task_name(task), task.lamp_name)))


def infer_task(task_name: str | None, questions: list[Mapping[str, Any]]) -> Task:
    """Resolve the task of a file from its ``task`` name; ``LaMP_2`` (or no name) is told apart by the profile keys
    (news: LaMP-2N, movies: LaMP-2M)."""
    if task_name and task_name.replace("-", "_") != "LaMP_2":
        return get_task(task_name)
    first = next((q["profile"][0] for q in questions if q.get("profile")), {})
    candidates = [t for t in TASKS.values() if (task_name is None or t.lamp_name == "LaMP_2")
                  and set(t.profile_keys) <= set(first)]
    if len(candidates) != 1:
        raise LampDataError(f"cannot tell the task from profile keys {sorted(first)}; pass task=...")
    return candidates[0]


def load_split(
    questions_path: str | Path,
    outputs_path: str | Path | None = None,
    task: str | Task | None = None,
    *,
    require_profile: bool = True,
) -> LampSplit:
    """Load and validate an official-format LaMP questions file and, optionally, its outputs file."""
    questions_path = Path(questions_path)
    raw = _read(questions_path)
    if not isinstance(raw, list):
        raise LampDataError(f"{questions_path}: expected a JSON list of questions, got {type(raw).__name__}")
    outputs = _read(outputs_path) if outputs_path else None
    if outputs is not None and not (isinstance(outputs, dict) and isinstance(outputs.get("golds"), list)):
        raise LampDataError(f"{outputs_path}: expected {{'task': ..., 'golds': [{{'id', 'output'}}]}}")
    resolved = get_task(task) if task is not None else infer_task(outputs and outputs.get("task"), raw)
    if outputs is not None and outputs.get("task") and outputs["task"].replace("-", "_") not in _task_names(resolved):
        raise LampDataError(f"{outputs_path}: task {outputs['task']!r} does not match {resolved.name}")
    golds = _gold_map(outputs, outputs_path) if outputs is not None else {}
    questions = [parse_question(q, i, resolved, questions_path, require_profile) for i, q in enumerate(raw)]
    dupes = [i for i, n in Counter(q.id for q in questions).items() if n > 1]
    if dupes:
        raise LampDataError(f"{questions_path}: duplicate question ids {dupes[:5]}")
    if outputs is not None:
        missing = [q.id for q in questions if q.id not in golds]
        if missing:
            raise LampDataError(f"{outputs_path}: no gold output for questions {missing[:5]}"
                                f"{' ...' if len(missing) > 5 else ''} of {questions_path}")
        for q in questions:
            q.gold = golds[q.id]
            _check_gold(resolved, q, outputs_path)
    return LampSplit(resolved, questions, source=str(questions_path))


def _check_gold(task: Task, q: Question, path: str | Path | None) -> None:
    """A classification gold must be one of the task's labels, a rating gold a rating (:func:`is_rating`)."""
    if task.kind == "classification" and q.gold not in task.labels:
        raise LampDataError(f"{path}: gold {q.gold!r} of question {q.id!r} is not a {task.name} label "
                            f"({', '.join(task.labels)})")
    if task.kind == "rating" and not is_rating(task, q.gold):
        raise LampDataError(f"{path}: gold {q.gold!r} of question {q.id!r} is not a rating "
                            f"from {task.labels[0]} to {task.labels[-1]}")


def is_rating(task: Task, value: Any) -> bool:
    """Whether ``value`` reads as a finite number within the rating task's scale (LaMP-3: 1 to 5); ``nan``,
    ``inf`` and out-of-scale scores are not ratings."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return float(task.labels[0]) <= number <= float(task.labels[-1])  # False for nan, inf and -inf


def load_task_split(data_dir: str | Path, task: str | Task, split: str) -> LampSplit:
    """Load ``{data_dir}/{task}/{split}_questions.json`` (+ ``_outputs.json`` when present), as the builder
    writes them."""
    task = get_task(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    qpath, opath = split_files(data_dir, task, split)
    if not qpath.exists():
        raise FileNotFoundError(f"{qpath} not found: build the data first (oppu-hub data build) or point "
                                f"--data-dir at LaMP-format files")
    return load_split(qpath, opath if opath.exists() else None, task)


def split_files(data_dir: str | Path, task: Task, split: str) -> tuple[Path, Path]:
    """Where a split of ``task`` lives in ``data_dir``: ``{task}/{split}_questions.json`` and ``_outputs.json``."""
    folder = Path(data_dir) / task.name
    return folder / f"{split}_questions.json", folder / f"{split}_outputs.json"


def check_output_path(path: str | Path, data_dir: str | Path, task: str | Task, *, overwrite: bool) -> Path:
    """Refuse to write to ``path`` when it is (or links to) a questions or outputs file of ``task`` in ``data_dir``,
    even with ``overwrite``, or when it exists and ``overwrite`` is not set."""
    path, task = Path(path), get_task(task)
    for split in SPLITS:
        for source in split_files(data_dir, task, split):
            if path.resolve() == source.resolve() or (path.exists() and source.exists() and path.samefile(source)):
                raise LampDataError(f"{path} is the input file {source} of {task.name} in {data_dir}: write the "
                                    f"predictions elsewhere")
    if path.exists() and not overwrite:
        raise TargetExistsError(f"{path} exists; pass --overwrite to replace it")
    return path


def write_split(split: LampSplit, folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write a split as ``{name}_questions.json`` and ``{name}_outputs.json`` (atomically)."""
    folder = Path(folder)
    qs = [{"id": q.id, "input": q.input, "profile": q.profile, "user_id": q.user_id} for q in split.questions]
    qpath = write_json(folder / f"{name}_questions.json", qs, indent=None)
    opath = write_predictions(split.task, {q.id: q.gold or "" for q in split.questions},
                              folder / f"{name}_outputs.json")
    return qpath, opath


def write_predictions(task: Task, predictions: Mapping[str, str], path: str | Path) -> Path:
    """Write predictions in the shape of LaMP's gold files (``task``: :func:`file_task_name`), so LaMP's evaluation
    scripts can score them."""
    golds = [{"id": str(i), "output": str(o)} for i, o in predictions.items()]
    return write_json(path, {"task": file_task_name(task), "golds": golds})


def read_predictions(path: str | Path) -> dict[str, str]:
    """Read a LaMP-format outputs/predictions file into ``{id: output}``."""
    return _gold_map(_read(path), path)


def _read(path: str | Path) -> Any:
    try:
        return read_json(path)
    except ValueError as e:
        raise LampDataError(str(e)) from None


def _gold_map(outputs: Any, path: str | Path | None) -> dict[str, str]:
    if not isinstance(outputs, dict) or not isinstance(outputs.get("golds"), list):
        raise LampDataError(f"{path}: expected {{'task': ..., 'golds': [{{'id', 'output'}}]}}")
    golds: dict[str, str] = {}
    for i, g in enumerate(outputs["golds"]):
        if not isinstance(g, dict) or "id" not in g or "output" not in g:
            raise LampDataError(f"{path}: golds[{i}] needs 'id' and 'output', got {str(g)[:80]!r}")
        if str(g["id"]) in golds:
            raise LampDataError(f"{path}: duplicate id {g['id']!r} in golds")
        golds[str(g["id"])] = str(g["output"])
    return golds


def parse_question(raw: Any, index: int, task: Task, path: Path, require_profile: bool) -> Question:
    """One raw LaMP question checked against ``task`` (keys, profile items, input format); errors name ``path``,
    the question and the item."""
    where = f"{path}: question [{index}]"
    if not isinstance(raw, dict):
        raise LampDataError(f"{where} is not an object")
    missing = [k for k in ("id", "input", "profile") if k not in raw]
    if missing:
        raise LampDataError(f"{where} (id {raw.get('id')!r}) lacks {missing}")
    qid = str(raw["id"])
    where = f"{path}: question {qid!r}"
    profile = raw["profile"]
    if not isinstance(profile, list):
        raise LampDataError(f"{where}: 'profile' must be a list")
    if require_profile and not profile:
        raise LampDataError(f"{where}: empty profile (the user has no history)")
    seen: set[str] = set()
    for j, item in enumerate(profile):
        if not isinstance(item, dict):
            raise LampDataError(f"{where}: profile[{j}] is not an object")
        lacking = [k for k in task.profile_keys if k not in item]
        if lacking:
            raise LampDataError(f"{where}: profile item {item.get('id', j)!r} lacks {lacking} "
                                f"(a {task.name} item has {list(task.profile_keys)})")
        if str(item["id"]) in seen:
            raise LampDataError(f"{where}: duplicate profile item id {item['id']!r}")
        seen.add(str(item["id"]))
        if task.kind == "rating" and not is_rating(task, item[task.label_key]):
            raise LampDataError(f"{where}: profile item {item['id']!r} has {task.label_key} "
                                f"{item[task.label_key]!r}, not a rating from {task.labels[0]} to {task.labels[-1]}")
    try:
        task.parse_input(raw["input"])
    except ValueError as e:
        raise LampDataError(f"{where}: {e}") from None
    user_id = raw.get("user_id", qid)  # LaMP's own files have none: each question is its own user
    if user_id is None or not str(user_id).strip():
        raise LampDataError(f"{where}: empty user_id")
    return Question(qid, raw["input"], profile, str(user_id))
