"""LaMP-1 (personalized citation identification) from the ACL Anthology Network: ``acl-metadata.txt``
(``id = {..}`` / ``author = {Last, First; ...}`` / ``title`` / ``venue`` / ``year`` blocks) and ``acl.txt``
(``citing , cited`` lines).

Choices:

* **Every author is a user** (held-out query papers are removed from other-split profiles by the splitter).
  Author names are HTML-unescaped *before* splitting on ";" (``Daum&eacute; III, Hal`` is one name; naive
  splitting is what produced the "s" artifact), turned into "First Last" and merged by an accent/case-free
  key. Fragments that are no name (lower-case or under 3 letters, e.g. "de", "M.") are dropped.
* Lines that are not UTF-8 are read as cp1252 (the file mixes both).
* Item: ``title``, ``abstract`` = "" (AAN has no abstracts; only 2 of its 18k titles match a paperlists
  abstract, so no join is attempted), ``date`` = the year; same-year papers are ordered by AAN id.
* **Query** for a paper of the user that cites at least one paper of the metadata: the cited title (one,
  chosen with the seed) vs a random paper of the metadata published no later than it that it does not cite;
  the option order is drawn with the seed and the gold is ``"[1]"`` or ``"[2]"``. Choices are seeded per
  paper, so coauthors get the same question for a shared paper.
"""

from __future__ import annotations

import gzip
import html
import random
import re
from bisect import bisect_right
from collections import Counter
from pathlib import Path

from .base import Item, Source, SourceData, SourceError, clean, name_key, require, slug, text_key

METADATA_FILE = "aan/acl-metadata.txt.gz"
CITATIONS_FILE = "aan/acl.txt.gz"

_LINE = re.compile(r"(\w+)\s*=\s*\{(.*)\}\s*")


def _lines(path: Path):
    try:
        with _open_bytes(path) as f:
            for n, raw in enumerate(f, 1):
                try:
                    yield n, raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield n, raw.decode("cp1252", errors="replace")
    except (OSError, EOFError) as e:
        raise SourceError(f"{path}: cannot read ({e})") from None


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_metadata(path: Path) -> list[dict[str, str]]:
    """AAN metadata blocks as dicts (``id``, ``author``, ``title``, ``venue``, ``year``)."""
    papers, block = [], {}
    for n, line in _lines(path):
        line = line.strip()
        if not line:
            if block:
                papers.append(block)
            block = {}
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise SourceError(f"{path}: line {n} is not 'key = {{value}}': {line[:80]!r}")
        block[match.group(1)] = match.group(2)
        if match.group(1) == "id":
            block["_line"] = str(n)
    if block:
        papers.append(block)
    for p in papers:
        if "id" not in p or "year" not in p:
            raise SourceError(f"{path}: the block near line {p.get('_line', '?')} lacks 'id' or 'year'")
    if not papers:
        raise SourceError(f"{path}: no paper blocks found")
    return papers


def parse_authors(value: str) -> list[str]:
    """``"Daum&eacute; III, Hal; Riloff, Ellen"`` -> ``["Hal Daumé III", "Ellen Riloff"]`` (fragments dropped)."""
    names = []
    for part in html.unescape(value).split(";"):
        last, _, first = (clean(x) for x in part.partition(","))
        name = clean(f"{first} {last}")
        letters = re.sub(r"[^\w]", "", name)
        if len(letters) < 3 or not name[:1].isupper():
            continue
        names.append(name)
    return names


def read_citations(path: Path) -> list[tuple[str, str]]:
    edges = []
    for n, line in _lines(path):
        if not line.strip():
            continue
        citing, sep, cited = line.partition(",")
        if not sep or not citing.strip() or not cited.strip():
            raise SourceError(f"{path}: line {n} is not 'citing , cited': {line.strip()[:80]!r}")
        edges.append((citing.strip(), cited.strip()))
    return edges


def load_citations(source: Source, seed: int) -> SourceData:
    """LaMP-1 items: ``{id, title, abstract, date}`` with a query (title vs two options) where possible."""
    meta_path, cite_path = require(source, METADATA_FILE), require(source, CITATIONS_FILE)
    dropped: Counter[str] = Counter()
    papers: dict[str, dict] = {}
    for block in read_metadata(meta_path):
        title = clean(html.unescape(block.get("title", "")))
        year = block["year"].strip()
        if not re.fullmatch(r"\d{4}", year):
            raise SourceError(f"{meta_path}: paper {block['id']!r}: year {year!r} is not YYYY")
        if not title:
            dropped["paper without title"] += 1
            continue
        papers[block["id"].strip()] = {"title": title, "year": year, "authors": parse_authors(block.get("author", ""))}
    cites: dict[str, set[str]] = {}
    for citing, cited in read_citations(cite_path):
        if citing in papers and cited in papers and citing != cited:
            cites.setdefault(citing, set()).add(cited)
        else:
            dropped["citation edge with an end outside the metadata"] += 1
    by_year = sorted(papers, key=lambda p: (papers[p]["year"], p))
    years = [papers[p]["year"] for p in by_year]

    def query(pid: str) -> tuple[dict[str, str], str] | None:
        paper, rng = papers[pid], random.Random(f"{seed}:LaMP-1:{pid}")
        own = text_key(paper["title"])
        cited = sorted(c for c in cites.get(pid, ()) if text_key(papers[c]["title"]) != own)
        if not cited:
            return None
        positive = rng.choice(cited)
        avoid = {own, text_key(papers[positive]["title"])}
        pool = bisect_right(years, paper["year"])
        negative = None
        for _ in range(100):
            cand = by_year[rng.randrange(pool)]
            if cand != pid and cand not in cites.get(pid, ()) and text_key(papers[cand]["title"]) not in avoid:
                negative = cand
                break
        if negative is None:
            return None
        options = [papers[positive]["title"], papers[negative]["title"]]
        gold = "[1]"
        if rng.random() < 0.5:
            options.reverse()
            gold = "[2]"
        return {"title": paper["title"], "option1": options[0], "option2": options[1]}, gold

    users: dict[str, list[Item]] = {}
    for pid in by_year:
        paper = papers[pid]
        if not paper["authors"]:
            dropped["paper without a usable author"] += 1
            continue
        item = Item(id=pid, fields={"title": paper["title"], "abstract": ""}, date=paper["year"], order=(pid,),
                    query=query(pid), key=text_key(paper["title"]))
        for name in paper["authors"]:
            users.setdefault(slug(name_key(name)), []).append(item)
    notes = ["every author is a user; abstract is empty (AAN has none)",
             "query: one cited title vs one uncited paper from no later than the query paper; order seeded"]
    return SourceData(users, dropped, notes)
