"""Prompts: phi_p(x, retrieved history, profile) within a token budget, and the training examples built from
queries (task adaptation of the base) and from a user's history (their adapter)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .data import Question
from .retrieval import BM25Retriever, Retrieved, retrieve_before
from .tasks import Task

PROFILE_HEADER = "User profile: "
HISTORY_HEADER = "User history:\n"


class PromptBuilder:
    """Builds prompts that fit ``max_length`` tokens: history items and profile are truncated, never the query.

    Args:
        task: the LaMP task.
        tokenizer: counts tokens; ``None`` counts whitespace-separated words (data-only use, tests).
        max_length: token budget of the whole prompt. A query longer than the budget is kept whole (and the
            history dropped): truncating it would change the question.
    """

    def __init__(self, task: Task, tokenizer: Any = None, max_length: int = 512) -> None:
        self.task = task
        self.tokenizer = tokenizer
        self.max_length = max_length

    def build(self, query: Mapping[str, str], retrieved: Sequence[Retrieved] = (), profile: str | None = None
              ) -> str:
        """Profile block, retrieved-history block (best first), then the task prompt for ``query``."""
        prompt = self.task.prompt(query)
        budget = self.max_length - self._count(prompt)
        profile_text = ""
        if profile:
            budget -= self._count(PROFILE_HEADER)
            share = budget // 2 if retrieved else budget
            profile_text = self._truncate(profile, share)
            budget -= self._count(profile_text)
        lines: list[str] = []
        if retrieved:
            budget -= self._count(HISTORY_HEADER)
            for i, r in enumerate(retrieved):
                line = self._truncate(self.task.history_line(r.item), budget // (len(retrieved) - i))
                if line:
                    lines.append(line)
                    budget -= self._count(line) + 1
        head = f"{PROFILE_HEADER}{profile_text}\n\n" if profile_text else ""
        if lines:
            head += HISTORY_HEADER + "\n".join(lines) + "\n\n"
        return head + prompt

    def _count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _truncate(self, text: str, n: int) -> str:
        if n <= 0:
            return ""
        if self.tokenizer is None:
            return " ".join(text.split()[:n])
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return text if len(ids) <= n else self.tokenizer.decode(ids[:n]).strip()


def completion(answer: str) -> str:
    """How an answer follows its prompt in training data (the EOS token is appended by the trainer)."""
    return " " + answer.strip()


def query_prompt(builder: PromptBuilder, question: Question, history: Sequence[Mapping[str, Any]], k: int = 0,
                 profile: str | None = None, retrieved: Sequence[Retrieved] | None = None) -> str:
    """The prompt for a LaMP query: top-``k`` BM25 items of ``history`` (or the given ``retrieved``)."""
    task = builder.task
    fields = question.fields(task)
    if retrieved is None:
        retrieved = BM25Retriever(task, history).retrieve(task.query_text(fields), k)
    return builder.build(fields, retrieved, profile)


HISTORY_FORMATS = ("full", "input", "output")


def history_examples(builder: PromptBuilder, history: Sequence[Mapping[str, Any]], k: int = 0,
                     profile: str | None = None, history_format: str = "full") -> list[dict[str, str]]:
    """A user's history as training examples, oldest first.

    Pair tasks give ``{"prompt", "completion"}`` rows whose prompt holds the top-``k`` items retrieved from the
    items strictly before that item; tasks without pairs (LaMP-1, LaMP-7) give ``{"text"}`` rows for
    next-token pretraining on the history itself. ``history_format`` ``input`` / ``output`` (the paper's
    Table 4 ablation, pair tasks only) trains by next-token prediction on only the items' inputs / outputs.
    """
    task = builder.task
    if history_format not in HISTORY_FORMATS:
        raise ValueError(f"unknown history_format {history_format!r}; expected one of {HISTORY_FORMATS}")
    if not task.has_pairs:
        return [{"text": task.item_text(item)} for item in history]
    if history_format == "input":
        return [{"text": task.query_text(task.item_fields(item))} for item in history]
    if history_format == "output":
        return [{"text": task.item_answer(item)} for item in history]
    rows = []
    for i, item in enumerate(history):
        fields = task.item_fields(item)
        retrieved = retrieve_before(task, history, i, task.query_text(fields), k)
        rows.append({"prompt": builder.build(fields, retrieved, profile),
                     "completion": completion(task.item_answer(item))})
    return rows
