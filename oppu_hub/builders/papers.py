"""LaMP-5 (scholarly title generation: abstract -> title) from the paperlists conference dump (JSON lines:
venue, year, title, abstract, authors [list], authorids [some venues]).

Choices:

* **Every author is a user**: a paper is in the history of each of its authors (held-out query papers are
  then removed from other-split users' profiles by the splitter, so a test answer is never training data).
* **Author identity.** Names are merged by an accent/case/punctuation-free key. ``authorids`` (OpenReview
  ``~First_Last3`` or ACL Anthology ``/f/first-last-xyz/``) tell when a name is shared: a name is *ambiguous*
  when it has two distinct ids in one id system, an OpenReview id numbered above 1, or an ACL id that is a
  disambiguated variant of the name. Unambiguous names are one user (``first-last``) across all venues,
  with or without ids. For ambiguous names, papers with an id go to that id's user (``openreview-...``,
  ``acl-...``) and papers without one are not attributed (counted as dropped author links). Names that
  never occur with an id cannot be checked and stay merged. Spelling variants of one person ("Eric P. Xing"
  vs "Eric Xing") are not merged: they stay separate users.
* Item: ``title``, ``abstract``, ``date`` = the year (``YYYY``; same-year papers keep file order). Papers
  without a title or abstract are dropped; a title listed twice (same paper in two lists) keeps the earliest.
* Recent big venues are missing from the dump (files over a size limit), so histories thin out after ~2019.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .base import Item, Source, SourceData, SourceError, clean, name_key, read_jsonl, require, slug, text_key

PAPERS_FILE = "paperlists/paperlists_ml_nlp_cv.jsonl.gz"


def _id_info(author_id: str, name: str) -> tuple[str, str, bool] | None:
    """``(system, user id, marks the name as shared)`` for one authorid, or ``None`` when unusable."""
    aid = author_id.strip()
    if aid.startswith("~"):
        match = re.fullmatch(r"~(.+?)(\d+)", aid)
        number = int(match.group(2)) if match else 1
        return "openreview", "openreview-" + slug(aid[1:]), number > 1
    parts = [p for p in aid.split("/") if p]
    if aid.startswith("/") and parts:
        return "acl", "acl-" + slug(parts[-1]), parts[-1] != slug(name_key(name))
    return None


def _authors(rec: dict, path: Path, n: int) -> list[tuple[str, str | None]]:
    names = rec.get("authors") or []
    if not isinstance(names, list):
        raise SourceError(f"{path}: line {n}: 'authors' must be a list, got {type(names).__name__}")
    names = [clean(a) for a in names]
    ids = str(rec.get("authorids") or "").split(";") if rec.get("authorids") else []
    if len(ids) != len(names):
        ids = [""] * len(names)
    return [(name, aid.strip() or None) for name, aid in zip(names, ids, strict=True) if name_key(name)]


def load_papers(source: Source, seed: int) -> SourceData:
    """LaMP-5 items: ``{id, title, abstract, date}`` (id = line number in the dump)."""
    path = require(source, PAPERS_FILE)
    dropped: Counter[str] = Counter()
    papers = []
    seen_titles: set[str] = set()
    records = []
    for n, rec in read_jsonl(path, required=("year",)):
        try:
            year = int(rec["year"])
        except (TypeError, ValueError):
            raise SourceError(f"{path}: line {n}: year {rec['year']!r} is not a number") from None
        records.append((year, n, clean(rec.get("title")), clean(rec.get("abstract")), _authors(rec, path, n)))
    records.sort(key=lambda r: (r[0], r[1]))
    ids_of: dict[str, dict[str, set[str]]] = {}
    shared: set[str] = set()
    for year, n, title, abstract, authors in records:
        for name, aid in authors:
            info = _id_info(aid, name) if aid else None
            if info:
                system, uid, is_shared = info
                ids_of.setdefault(name_key(name), {}).setdefault(system, set()).add(uid)
                if is_shared:
                    shared.add(name_key(name))
        if not title:
            dropped["no title"] += 1
            continue
        tkey = text_key(title)
        if tkey in seen_titles:
            dropped["title listed twice (earliest kept)"] += 1
            continue
        seen_titles.add(tkey)
        if not abstract:
            dropped["no abstract"] += 1
            continue
        papers.append((year, n, title, abstract, authors))
    shared |= {key for key, systems in ids_of.items() if any(len(v) > 1 for v in systems.values())}

    users: dict[str, list[Item]] = {}
    for year, n, title, abstract, authors in papers:
        item = None
        for name, aid in authors:
            key = name_key(name)
            if key in shared:
                info = _id_info(aid, name) if aid else None
                if info is None:
                    dropped["author link: shared name without author id"] += 1
                    continue
                user = info[1]
            else:
                user = slug(key)
            if item is None:
                item = Item(id=str(n), fields={"title": title, "abstract": abstract}, date=f"{year:04d}",
                            order=(n,), query=({"abstract": abstract}, title), key=text_key(title))
            users.setdefault(user, []).append(item)
    notes = [f"every author is a user; {len(shared)} names found shared through authorids use the ids instead",
             "histories thin out after ~2019 (big recent venues missing from the dump)"]
    return SourceData(users, dropped, notes)
