"""A leaderboard task's finished methods while the task runs, so that a long task resumes method by method.

:func:`oppu_hub.evaluation.task_rows` keeps each method's row in ``{out}/rows/{task}.partial.json`` as soon as it is
written, with the key of the settings it depends on (the per-method :func:`~oppu_hub.evaluation.row_spec`), the
seconds it took and the machine. A run that stops (a session's time limit, a fresh machine without ``runs/``)
resumes on any machine that has these files and the predictions they name: only the missing methods are trained and
predicted. Rows another table already computed under the same per-method key (``--rows_from``) are copied in
(:func:`adopt`) instead of computed again. The partial file goes once the task's rows are complete.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import read_json, write_json


@dataclass
class Finished:
    """One finished method: its row, the key it was computed under, its compute seconds for this table (0 for a row
    copied from another table) and the machine that computed it."""

    key: str
    row: dict[str, Any]
    seconds: float
    machine: str


@dataclass
class TaskProgress:
    """The finished methods of one task of one table (``{out}/rows/{task}.partial.json``)."""

    path: Path
    methods: dict[str, Finished] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path, task: str) -> TaskProgress:
        path = out / "rows" / f"{task}.partial.json"
        recorded = read_json(path)["methods"] if path.exists() else {}
        return cls(path, {name: Finished(**entry) for name, entry in recorded.items()})

    def add(self, finished: Finished) -> None:
        """Record one finished method and write the file at once."""
        self.methods[finished.row["method"]] = finished
        write_json(self.path, {"methods": {name: vars(f) for name, f in self.methods.items()}})

    def matching(self, keys: Mapping[str, str]) -> dict[str, Finished]:
        """The recorded methods whose key is the one ``keys`` names for them now."""
        return {name: f for name, f in self.methods.items() if keys.get(name) == f.key}

    def done(self) -> None:
        """The task's rows are complete (recorded whole elsewhere): drop the file."""
        self.path.unlink(missing_ok=True)


def finished_elsewhere(tables: Sequence[str | Path], task: str, keys: Mapping[str, str]) -> dict[str, Finished]:
    """Rows of ``task`` that other tables (their out folders) computed under the keys ``keys`` names, finished
    (``rows/{task}.json``, which records its methods' keys) or in progress (``rows/{task}.partial.json``); the first
    table that has a method wins."""
    found: dict[str, Finished] = {}
    for table in map(Path, tables):
        whole = table / "rows" / f"{task}.json"
        candidates = TaskProgress.load(table, task)
        if whole.exists():
            record = read_json(whole)
            for row in record["rows"]:
                if key := record.get("method_keys", {}).get(row["method"]):
                    candidates.methods[row["method"]] = Finished(key, row, 0.0, record.get("machine", "not recorded"))
        for name, f in candidates.matching(keys).items():
            found.setdefault(name, f)
    return found


def adopt(finished: Finished, folder: Path) -> Finished:
    """``finished``, a row of another table, as a row of the table whose predictions live in ``folder``
    (``{out}/predictions/{task}``): its prediction file copied there, its paths pointing there and no compute
    seconds of its own (they are the other table's)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(finished.row["predictions"]).name
    shutil.copyfile(finished.row["predictions"], target)
    row = {**finished.row, "predictions": str(target), "golds": str(folder / "golds.json"),
           "query_users": str(folder / "users.json")}
    return Finished(finished.key, row, 0.0, finished.machine)


__all__ = ["Finished", "TaskProgress", "adopt", "finished_elsewhere"]
