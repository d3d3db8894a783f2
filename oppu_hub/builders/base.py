"""Shared pieces of the source readers: the item record, errors, and small text/file helpers.

Every reader returns a :class:`SourceData`: per-user lists of :class:`Item` (any order; the splitter sorts
them by ``(date, order)``), counts of what was dropped and why, and notes. An item that can be a query
carries ``query = (input_fields, gold)``; ``input_fields`` are passed to :meth:`Task.format_input`.
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SourceError(ValueError):
    """A raw source file is missing or malformed; the message names the file (and line where known)."""


class EmptyBuildError(SourceError):
    """The sources yield no eligible or no test user under the config; the message names the task and why."""


@dataclass
class Item:
    """One history item of one user.

    Args:
        id: item id, unique within the user's items (and the same id for the same item of two users).
        fields: the profile fields except ``id`` and ``date`` (exactly ``Task.profile_keys`` minus ``id``).
        date: ISO-ish sortable date (``YYYY-MM-DD[ HH:MM[:SS]]`` or ``YYYY``).
        order: tie-breaker among items with the same date (e.g. the row number), so sorting is total.
        query: ``(input_fields, gold)`` when the item can be a query, ``None`` when it cannot.
        key: content key for de-duplication within a user (later copies of the same text are dropped).
    """

    id: str
    fields: dict[str, str]
    date: str
    order: tuple[Any, ...] = ()
    query: tuple[dict[str, str], str] | None = None
    key: str = ""

    def profile_item(self) -> dict[str, str]:
        return {"id": self.id, **self.fields, "date": self.date}


@dataclass
class SourceData:
    """What a reader hands to the splitter."""

    users: dict[str, list[Item]]
    dropped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def clean(text: Any) -> str:
    """Collapse whitespace (and decode stray HTML entities such as ``&amp;``)."""
    if text is None:
        return ""
    return re.sub(r"\s+", " ", html.unescape(str(text))).strip()


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def name_key(name: str) -> str:
    """Merge key for a person's name: accents stripped, case-folded, punctuation dropped
    (``"DÁNICA COTO"``, ``"Dánica Coto"`` and ``"Danica Coto"`` share one key)."""
    text = strip_accents(name).casefold().replace("'", "")
    return " ".join(re.findall(r"[a-z0-9]+", text))


def slug(text: str) -> str:
    """A path-safe user id (``[a-z0-9_-]``)."""
    return re.sub(r"[^a-z0-9_]+", "-", strip_accents(text).casefold()).strip("-") or "unknown"


def text_key(text: str) -> str:
    """Content key for duplicate detection: lower-case alphanumerics only."""
    return " ".join(re.findall(r"[a-z0-9]+", strip_accents(text).casefold()))


Source = Path | Mapping[str, Path]
"""Where a reader finds its files: a source folder (``folder / rel``), or the files a build resolved for the task,
``{default relative path: file}``, where a user's own file may stand in for the default (``BuildConfig.sources``)."""


def locate(source: Source, rel: str) -> Path | None:
    """The file that stands for ``rel`` in ``source``, or ``None`` when there is none."""
    path = source.get(rel) if isinstance(source, Mapping) else Path(source) / rel
    return path if path is not None and path.is_file() else None


def require(source: Source, rel: str) -> Path:
    """Like :func:`locate`, but a missing file raises SourceError."""
    return require_any(source, (rel,))[rel]


def require_any(source: Source, rels: Sequence[str]) -> dict[str, Path]:
    """``{rel: file}`` for those of the alternatives ``rels`` that ``source`` has; at least one is needed."""
    found = {rel: path for rel in rels if (path := locate(source, rel)) is not None}
    if not found:
        mapped = isinstance(source, Mapping)
        others = f" (nor {', '.join(rels[1:])})" if len(rels) > 1 else ""
        under = "" if mapped else f" (expected under {source})"
        raise SourceError(f"{rels[0] if mapped else Path(source) / rels[0]}: source file not found{others}{under}")
    return found


def open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a plain or ``.gz`` text file."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)``; a malformed line or a missing required key raises SourceError."""
    try:
        with open_text(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SourceError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise SourceError(f"{path}: line {n} is not a JSON object")
                missing = [k for k in required if k not in rec]
                if missing:
                    raise SourceError(f"{path}: line {n} lacks {missing}")
                yield n, rec
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: cannot read ({e})") from None


def read_csv(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row_number, row)`` of a CSV with a header; missing columns raise SourceError."""
    try:
        with open_text(path) as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [k for k in required if k not in header]
            if missing:
                raise SourceError(f"{path}: CSV header lacks columns {missing} (has {header[:12]})")
            yield from enumerate(reader, 1)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise SourceError(f"{path}: cannot read ({e})") from None


