"""What a comparison (:mod:`oppu_hub.compare`) is and how it reads on the page: the result types, each answer marked
against the gold and the task's labels, and the Markdown and table rows the Space shows. Torch- and gradio-free."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .adapters import AdapterBaseMismatchError, AdapterNotFoundError, AdapterSettingMismatchError
from .compare_config import SpaceError
from .data import Question
from .metrics import score
from .retrieval import Retrieved
from .tasks import Task

if TYPE_CHECKING:
    from .compare_make import MadeAdapter

# Marks of an answer; their classes let the page frame the answer box (green, red, amber dashed).
RIGHT = '<span class="oppu-mark-right">✓ right</span>'
WRONG = '<span class="oppu-mark-wrong">✗ wrong</span>'
OFF_LABELS = '<span class="oppu-mark-off">⚠ not a label</span>'


@dataclass
class ColumnAnswer:
    """One column's answer: ``note`` says why there is none; ``right`` (held-out queries of label tasks), ``rouge1``
    (of generation tasks) and ``off_labels`` (an answer outside the task's label set) mark it against the gold."""

    name: str
    label: str
    method: str
    answer: str = ""
    raw: str = ""
    seconds: float | None = None
    note: str | None = None
    right: bool | None = None
    rouge1: float | None = None
    off_labels: bool = False


@dataclass
class Comparison:
    """The answers of every column to one query, with the items retrieved for it and notes for the visitor."""

    task: str
    user: str
    k: int
    query: str
    gold: str | None
    answers: str  # "generate" | "labels" (DecodingOptions.answers)
    columns: list[ColumnAnswer]
    retrieved: list[Retrieved]
    notes: list[str] = field(default_factory=list)


@dataclass
class HistorySummary:
    """A user's history at a glance: its size and dates, and its label counts (label tasks only, else ``None``)."""

    user: str
    items: int
    first_date: str | None
    last_date: str | None
    counts: list[tuple[str, int]] | None
    latest: str | None


def unavailable_note(error: Exception) -> str:
    """Why a column cannot answer, for the visitor."""
    if isinstance(error, AdapterNotFoundError):
        return f"No adapter for this user: {error}"
    if isinstance(error, AdapterBaseMismatchError):
        return f"Adapter/base mismatch: {error}"
    if isinstance(error, AdapterSettingMismatchError):
        return f"Adapter trained for another column: {error}"
    if isinstance(error, SpaceError):
        return str(error)
    return f"Adapter cannot be loaded: {error}"


def mark(task: Task, column: ColumnAnswer, gold: str | None) -> ColumnAnswer:
    """``column`` marked against the task's labels and, where known, the ``gold`` answer (an unavailable column
    is left unmarked)."""
    if column.note is not None:
        return column
    if task.labels:
        column.off_labels = column.answer not in task.labels
        if gold is not None:
            column.right = column.answer == (task.parse_output(gold) or gold)
    elif gold is not None:
        column.rouge1 = score(task, {"q": column.answer}, {"q": gold})["rouge-1"]
    return column


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at a word boundary with an ellipsis when longer than ``width`` characters."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    head = text[:width - 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else head
    return cut.rstrip(" ,;:.-") + "…"


# --- the page's text ------------------------------------------------------------------------------------------
def answer_text(column: ColumnAnswer) -> str:
    """What a column's answer box holds: the answer, or why there is none."""
    return column.answer if column.note is None else f"(unavailable) {column.note}"


def answer_detail(column: ColumnAnswer) -> str:
    """The line under an answer: its mark against the gold and the labels, the method that answered, its latency
    and the raw output."""
    if column.seconds is None:
        return f"`{column.method}` · latency: —"
    marks = [RIGHT if column.right else WRONG] if column.right is not None else []
    if column.off_labels:
        marks.append(OFF_LABELS)
    if column.rouge1 is not None:
        marks.append(f"ROUGE-1 vs gold **{column.rouge1:.2f}**")
    parts = [*marks, f"`{column.method}`", f"latency **{column.seconds:.2f} s**"]
    raw = shorten(column.raw.replace("`", "'"), 80)
    if raw and raw != column.answer:
        parts.append(f"raw: `{raw}`")
    return " · ".join(parts)


def head_markdown(comparison: Comparison) -> str:
    """The line above the answers: task, user, k, how answers were decoded, the gold, and any warnings."""
    how = "each label scored" if comparison.answers == "labels" else "generated"
    head = f"**{comparison.task}**, user **{comparison.user}**, k={comparison.k}, answers {how}"
    if comparison.gold is not None:
        right = sum(bool(c.right) for c in comparison.columns)
        head += f" · gold: `{comparison.gold}`"
        if any(c.right is not None for c in comparison.columns):
            head += f" · {right} of {len(comparison.columns)} columns right"
    if comparison.k == 0:
        head += " · k=0: nothing is retrieved, so the retrieval columns run as the base and OPPU do"
    if comparison.notes:
        head += "\n\n" + "\n\n".join(f"**Warning:** {n}" for n in comparison.notes)
    return head


def retrieved_table(task: Task, comparison: Comparison | None) -> tuple[list[str], list[list[Any]]]:
    """The retrieved items' table (headers, rows): a label column for label tasks only (a generation task's
    answer is a headline or title, already in the item)."""
    labelled = bool(task.labels and task.label_key)
    headers = ["rank", "BM25 score", "date", *(["label"] if labelled else []), "item"]
    rows = []
    for i, r in enumerate(comparison.retrieved if comparison else []):
        label = [shorten(str(r.item.get(task.label_key, "")), 30)] if labelled else []
        rows.append([i + 1, round(r.score, 3) if r.score is not None else None, str(r.item.get("date", "")), *label,
                     shorten(task.history_line(r.item), 240)])
    return headers, rows


def history_markdown(summary: HistorySummary) -> str:
    text = f"**{summary.user}**: {summary.items} history items"
    text += f", {summary.first_date} to {summary.last_date}" if summary.first_date else " (undated)"
    if summary.counts:
        text += "; labels: " + ", ".join(f"{label} ({n})" for label, n in summary.counts[:8])
    elif summary.latest:
        text += f"; latest: {shorten(summary.latest, 160)}"
    return text


def query_markdown(task: Task, question: Question) -> str:
    return f"**Query** {question.id}: {shorten(task.query_text(question.fields(task)), 400)}\n\n" \
           f"**Gold answer:** `{question.gold}`"


def made_markdown(made: MadeAdapter) -> str:
    """What *Make my adapter* did."""
    used, uploaded = len(made.history), made.items
    of = f" (the newest of the {uploaded} uploaded)" if uploaded > used else ""
    settings = " and ".join(f"k={k}" for k in made.folders)
    text = (f"**Trained** your {made.task} adapter ({settings}) on {count(used, 'history item')}{of} x "
            f"{count(made.epochs, 'epoch')} in {duration(made.seconds)}.")
    if made.repo:
        return text + (f" **Pushed** the k=0 one to your private repo [{made.repo}]({made.url}) (model card, tags, "
                       f"`oppu.json`); it is listed under *Compare* after a reload.")
    return text + " Not pushed: nobody signs in here (that needs a Space or a Hub store); it lives in this session."


def count(n: float, noun: str) -> str:
    """``"1 epoch"``, ``"2 epochs"``, ``"0.5 epochs"``."""
    return f"{n:g} {noun}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def gains_caption(plot: str | Path) -> str | None:
    """The caption of the leaderboard's per-user gains plot: its tasks and users, read from the ``.json`` that
    ``oppu-hub analyze user-gains`` writes beside it; ``None`` when the plot does not exist."""
    plot = Path(plot)
    if not plot.is_file():
        return None
    try:
        rows = json.loads(plot.with_suffix(".json").read_text())["rows"]
        users = {row[0]: row[2] for row in rows}
        tasks = ", ".join(f"{task} ({n} users)" for task, n in users.items())
        covers = f"It covers the tasks of that analysis: {tasks}."
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        covers = "Its tasks are listed under its bars."
    return ("Per-user outcome of OPPU against the reference on the leaderboard's test users (`oppu-hub analyze "
            f"user-gains`): the share of users each comparison helped, hurt or left unchanged. {covers}")


__all__ = ["ColumnAnswer", "Comparison", "HistorySummary", "answer_detail", "answer_text", "count", "duration",
           "gains_caption", "head_markdown", "history_markdown", "made_markdown", "mark", "query_markdown",
           "retrieved_table", "shorten", "unavailable_note"]
