"""The LaMP task registry: prompts, labels, output parsing and metric names for each task.

Each task knows three formats of the same example:

* the *official LaMP input* string (what ``*_questions.json`` holds; :meth:`Task.format_input` writes it and
  :meth:`Task.parse_input` reads its fields back),
* the *OPPU prompt* (the paper's Appendix I wording, :meth:`Task.prompt`),
* a *history item* (a profile entry), rendered for retrieval (:meth:`Task.item_text`), for the prompt's
  retrieved-history block (:meth:`Task.history_line`) and, where the item is a query/answer pair, as a
  training example (:meth:`Task.item_fields` fill the prompt, :meth:`Task.item_answer` is the answer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .lamp_metric.core import MOVIE_TAGS, NEWS_CATEGORIES

TaskKind = Literal["classification", "rating", "generation"]
# NEWS_CATEGORIES and MOVIE_TAGS live with the metrics (the standalone `evaluate` module) that score against them.
RATINGS = ("1", "2", "3", "4", "5")
CITATION_OPTIONS = ("[1]", "[2]")


class UnknownTaskError(KeyError):
    """Raised for a task name that is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Task:
    """One LaMP task.

    Args:
        name: canonical name, e.g. ``"LaMP-2N"``.
        lamp_name: the name official LaMP files use in ``{"task": ...}`` (LaMP-2N and 2M both say ``LaMP_2``).
        title: human readable title.
        kind: ``classification`` (accuracy, macro-F1), ``rating`` (MAE, RMSE) or ``generation`` (ROUGE-1/L).
        input_format: the official LaMP input with ``{field}`` placeholders.
        prompt_format: the OPPU paper's prompt (Appendix I) with the same placeholders.
        profile_keys: keys every profile item has (besides optional ``date``).
        label_key: the profile key that is the answer of a history item, or ``None`` when history items
            are not query/answer pairs (LaMP-1 papers, LaMP-7 tweets: trained by next-token pretraining).
        item_format: how a history item is shown in the retrieved-history block of a prompt.
        labels: the closed label set of classification and rating tasks.
        max_new_tokens: generation budget for an answer.
    """

    name: str
    lamp_name: str
    title: str
    kind: TaskKind
    input_format: str
    prompt_format: str
    profile_keys: tuple[str, ...]
    label_key: str | None
    item_format: str
    labels: tuple[str, ...] = ()
    max_new_tokens: int = 8
    _input_regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_input_regex", _format_to_regex(self.input_format))

    # --- metrics -------------------------------------------------------------------------------------
    @property
    def metric_names(self) -> tuple[str, str]:
        """The two metrics the paper reports for this task, the headline one first."""
        return {
            "classification": ("accuracy", "f1"),
            "rating": ("mae", "rmse"),
            "generation": ("rouge-1", "rouge-l"),
        }[self.kind]

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "rating"

    @property
    def has_pairs(self) -> bool:
        """Whether history items are (input, answer) pairs; if not, users are trained by LM pretraining."""
        return self.label_key is not None

    # --- official input <-> fields -------------------------------------------------------------------
    def format_input(self, **fields: str) -> str:
        """Write the official LaMP ``input`` string from its fields (used by the data builder)."""
        return self.input_format.format(**self._with_label_lists(fields))

    def parse_input(self, text: str) -> dict[str, str]:
        """Read the fields back out of an official LaMP ``input`` string."""
        match = self._input_regex.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"{self.name}: input does not follow the LaMP format {self.input_format!r}: "
                             f"{_preview(text)!r}")
        return {k: v.strip() for k, v in match.groupdict().items() if not k.startswith("_")}

    # --- prompts -------------------------------------------------------------------------------------
    def prompt(self, fields: Mapping[str, str]) -> str:
        """The paper's task prompt for a query given as fields (no history, no profile)."""
        return self.prompt_format.format(**self._with_label_lists(fields))

    def item_fields(self, item: Mapping[str, Any]) -> dict[str, str]:
        """Map a history item onto the prompt's fields (e.g. a LaMP-5 item's abstract -> ``abstract``)."""
        missing = [k for k in self.profile_keys if k not in item]
        if missing:
            raise KeyError(f"{self.name}: history item {item.get('id', '?')!r} lacks {missing}")
        return {k: _clean(item[k]) for k in self.profile_keys if k != "id"}

    @property
    def query_fields(self) -> tuple[str, ...]:
        """The fields a query fills into the prompt (``labels`` excluded)."""
        return tuple(f for f in re.findall(r"\{(\w+)\}", self.prompt_format) if f != "labels")

    def query_text(self, fields: Mapping[str, str]) -> str:
        """The text of a query (or of a history item's input side) that retrieval searches with."""
        return " ".join(fields[f] for f in self.query_fields if fields.get(f))

    def item_answer(self, item: Mapping[str, Any]) -> str:
        """The answer of a history item of a pair task (its label, score, title...)."""
        if self.label_key is None:
            raise ValueError(f"{self.name} history items are not query/answer pairs")
        return _clean(item[self.label_key])

    def item_text(self, item: Mapping[str, Any]) -> str:
        """All text of a history item, for BM25 indexing and next-token pretraining."""
        return " ".join(v for v in self.item_fields(item).values() if v)

    def history_line(self, item: Mapping[str, Any]) -> str:
        """How a retrieved history item is shown inside a prompt."""
        return self.item_format.format(**self.item_fields(item))

    # --- answers -------------------------------------------------------------------------------------
    def parse_output(self, text: str) -> str | None:
        """Normalise a generated answer: a label of ``labels`` (or ``None`` if none can be read) for
        classification and rating tasks; the cleaned first line for generation tasks."""
        text = text.strip()
        if self.kind == "generation":
            first = next((line for line in text.splitlines() if line.strip()), "")
            return first.strip().strip('"').strip()
        if self.name == "LaMP-1":
            match = re.search(r"[12]", text)
            return f"[{match.group()}]" if match else None
        if self.kind == "rating":
            match = re.search(r"[1-5]", text)
            return match.group() if match else None
        return _match_label(text, self.labels)

    def _with_label_lists(self, fields: Mapping[str, str]) -> dict[str, str]:
        return {**fields, "labels": ", ".join(self.labels)}


def _format_to_regex(fmt: str) -> re.Pattern[str]:
    """Turn ``"a {x} b {y}"`` into a regex with named groups; ``{labels}`` matches any bracket list."""
    parts = re.split(r"\{(\w+)\}", fmt)
    pattern = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += r"\s*" + r"\s+".join(re.escape(w) for w in part.split()) + r"\s*"
        elif part == "labels":
            pattern += r"(?P<_labels>[^\]]*)"
        else:
            pattern += rf"(?P<{part}>.*?)"
    return re.compile(pattern, re.S)


def _match_label(text: str, labels: tuple[str, ...]) -> str | None:
    """Find the label a generation names: exact match first, then the earliest (longest on ties) mention."""
    norm = _norm(text)
    by_norm = {_norm(label): label for label in labels}
    if norm in by_norm:
        return by_norm[norm]
    hits = [(m.start(), -len(n), label) for n, label in by_norm.items()
            if (m := re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", norm))]
    return min(hits)[2] if hits else None


def _norm(text: str) -> str:
    text = text.lower().replace("&amp;", "&")
    text = re.sub(r"[\"'`*.:;!?()\[\]]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _clean(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value)).strip()


def _preview(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[:n] + "..."


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            name="LaMP-1", lamp_name="LaMP_1", title="Personalized citation identification",
            kind="classification", labels=CITATION_OPTIONS, max_new_tokens=4,
            input_format='For an author who has written the paper with the title "{title}", which reference is '
                         'related? Just answer with [1] or [2] without explanation. [1]: "{option1}" '
                         '[2]: "{option2}"',
            prompt_format="Identify the most relevant reference for the listed publication by the researcher. "
                          "Select the reference paper that is most closely related to the researcher's work. "
                          "Please respond with only the number that corresponds to the reference.\n\n"
                          "paper title: {title}\n\nreference: [1] - {option1} [2] - {option2}\n\nanswer:",
            profile_keys=("id", "title", "abstract"), label_key=None,
            item_format='paper title: "{title}" abstract: "{abstract}"',
        ),
        Task(
            name="LaMP-2N", lamp_name="LaMP_2", title="Personalized news categorization",
            kind="classification", labels=NEWS_CATEGORIES, max_new_tokens=8,
            input_format="Which category does this article relate to among the following categories? Just "
                         "answer with the category name without further explanation. categories: [{labels}] "
                         "article: {text}",
            prompt_format="Which category does this article relate to among the following categories? Just "
                          "answer with the category name without further explanation. categories: [{labels}]"
                          "\n\narticle: {text} category:",
            profile_keys=("id", "text", "title", "category"), label_key="category",
            item_format='the category for the article: "{text}" is "{category}"',
        ),
        Task(
            name="LaMP-2M", lamp_name="LaMP_2", title="Personalized movie tagging",
            kind="classification", labels=MOVIE_TAGS, max_new_tokens=8,
            input_format="Which tag does this movie relate to among the following tags? Just answer with the "
                         "tag name without further explanation. tags: [{labels}] description: {description}",
            prompt_format="Which tag does this movie relate to among the following tags? Just answer with the "
                          "tag name without further explanation. tags: [{labels}]\n\n"
                          "description: {description} tag:",
            profile_keys=("id", "description", "tag"), label_key="tag",
            item_format='the tag for the movie: "{description}" is "{tag}"',
        ),
        Task(
            name="LaMP-3", lamp_name="LaMP_3", title="Personalized product rating",
            kind="rating", labels=RATINGS, max_new_tokens=4,
            input_format="What is the score of the following review on a scale of 1 to 5? just answer with 1, "
                         "2, 3, 4, or 5 without further explanation. review: {text}",
            prompt_format="What is the score of the following review on a scale of 1 to 5? just answer with 1, "
                          "2, 3, 4, or 5 without further explanation.\n\nreview: {text} score:",
            profile_keys=("id", "text", "score"), label_key="score",
            item_format='{score} is the score for "{text}"',
        ),
        Task(
            name="LaMP-4", lamp_name="LaMP_4", title="Personalized news headline generation",
            kind="generation", max_new_tokens=32,
            input_format="Generate a headline for the following article: {text}",
            prompt_format="Generate a headline for the following article.\n\narticle: {text} headline:",
            profile_keys=("id", "text", "title"), label_key="title",
            item_format='"{title}" is the title for "{text}"',
        ),
        Task(
            name="LaMP-5", lamp_name="LaMP_5", title="Personalized scholarly title generation",
            kind="generation", max_new_tokens=32,
            input_format="Generate a title for the following abstract of a paper: {abstract}",
            prompt_format="Generate a title for the following abstract of a paper.\n\nabstract: {abstract} "
                          "title:",
            profile_keys=("id", "title", "abstract"), label_key="title",
            item_format='"{title}" is the title for "{abstract}"',
        ),
        Task(
            name="LaMP-7", lamp_name="LaMP_7", title="Personalized tweet paraphrasing",
            kind="generation", max_new_tokens=48,
            input_format="Paraphrase the following tweet without any explanation before or after it: {text}",
            prompt_format="Following the given pattern, paraphrase the following text into tweet without any "
                          "explanation before or after it.\n\ntext: {text} tweet:",
            profile_keys=("id", "text"), label_key=None,
            item_format='"{text}"',
        ),
    )
}

_ALIASES = {re.sub(r"[^0-9a-z]", "", name.lower()): name for name in TASKS}


def get_task(name: str | Task) -> Task:
    """Look a task up by name; ``LaMP-2N``, ``lamp_2n`` and ``lamp2n`` are all accepted."""
    if isinstance(name, Task):
        return name
    key = re.sub(r"[^0-9a-z]", "", str(name).lower())
    if key not in _ALIASES:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[_ALIASES[key]]
