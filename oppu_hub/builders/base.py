"""Shared pieces of the source readers: the item record, errors, and small text/file helpers.

Every reader returns a :class:`SourceData`: per-user lists of :class:`Item` (any order; the splitter sorts
them by ``(date, order)``), counts of what was dropped and why, and notes. An item that can be a query
carries ``query = (input_fields, gold)``; ``input_fields`` are passed to :meth:`Task.format_input`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
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


def require(source_dir: Path, rel: str) -> Path:
    path = Path(source_dir) / rel
    if not path.is_file():
        raise SourceError(f"{path}: source file not found (expected under {source_dir})")
    return path


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
