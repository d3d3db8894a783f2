"""LaMP-2N (news categorization) and LaMP-4 (news headline generation) from the HuffPost News Category
Dataset v3 (JSON lines: link, headline, category, short_description, authors, date).

Choices:

* **User = first named author.** ``authors`` such as ``"Eric Tucker and Mary Clare Jalonick, AP"`` are split
  on commas and "and"; a leading "By" is removed; agencies and roles ("AP", "Reuters", "HuffPost",
  "... Writer", "Contributor") are skipped. The article goes to the first remaining name only, so one
  article is never a query of one user and history of another. Rows without an author are dropped.
* **Names are merged** by an accent-, case- and punctuation-free key ("DÁNICA COTO" = "Danica Coto"); the user
  id is its slug (``danica-coto``).
* Item: ``text`` = short_description, ``title`` = headline, ``date`` = the row date (YYYY-MM-DD); rows with an
  empty description or headline are dropped. Same-day items keep file order reversed (the file is
  newest first). Repeated descriptions of one author keep the earliest.
* **LaMP-2N categories**: HuffPost names map onto the 15 LaMP labels where the counterpart is obvious
  (:data:`CATEGORY_MAP`, e.g. SCIENCE and TECH -> "science & technology", WELLNESS -> "healthy living",
  ARTS & CULTURE -> "culture & arts"); items of any other category (U.S. NEWS, WORLD NEWS, COMEDY, MEDIA,
  MONEY, ...) are dropped and counted per category in the manifest. LaMP-4 keeps every category.
* The file holds only 2018-05..2022-09, so histories are complete only inside that window.
"""

from __future__ import annotations

import re
from collections import Counter

from .base import Item, Source, SourceData, SourceError, clean, name_key, read_jsonl, require, slug, text_key

NEWS_FILE = "news_category/News_Category_Dataset_v3.first10000.json.gz"

CATEGORY_MAP = {
    "TRAVEL": "travel",
    "EDUCATION": "education",
    "COLLEGE": "education",
    "PARENTS": "parents",
    "PARENTING": "parents",
    "STYLE & BEAUTY": "style & beauty",
    "STYLE": "style & beauty",
    "ENTERTAINMENT": "entertainment",
    "FOOD & DRINK": "food & drink",
    "TASTE": "food & drink",
    "SCIENCE": "science & technology",
    "TECH": "science & technology",
    "BUSINESS": "business",
    "SPORTS": "sports",
    "HEALTHY LIVING": "healthy living",
    "WELLNESS": "healthy living",
    "WOMEN": "women",
    "POLITICS": "politics",
    "CRIME": "crime",
    "CULTURE & ARTS": "culture & arts",
    "ARTS & CULTURE": "culture & arts",
    "ARTS": "culture & arts",
    "RELIGION": "religion",
}

_NOT_PEOPLE = {"ap", "ap`", "associated press", "the associated press", "reuters", "huffpost", "jr", "afp"}
_ROLE_WORDS = re.compile(r"\b(writer|contributor|editor|staff|via|reporter|correspondent|huffpost|buzzfeed)\b",
                         re.I)


def first_author(authors: str) -> str | None:
    """The first person named in a HuffPost ``authors`` string, or ``None``."""
    for part in re.split(r",|\band\b|&", authors or "", flags=re.I):
        name = re.sub(r"^\s*by\s+", "", clean(part), flags=re.I).strip(" .`")
        key = name_key(name)
        if not key or key in _NOT_PEOPLE or _ROLE_WORDS.search(name) or len(key.split()) < 2:
            continue
        return name
    return None


def _read(source: Source, *, categories: bool) -> SourceData:
    path = require(source, NEWS_FILE)
    users: dict[str, list[Item]] = {}
    dropped: Counter[str] = Counter()
    for n, rec in read_jsonl(path, required=("headline", "category", "short_description", "authors", "date")):
        text, title = clean(rec["short_description"]), clean(rec["headline"])
        date = str(rec["date"])[:10]
        if not re.fullmatch(r"\d{4}-\d\d-\d\d", date):
            raise SourceError(f"{path}: line {n}: date {rec['date']!r} is not YYYY-MM-DD")
        author = first_author(rec["authors"])
        if author is None:
            dropped["no author"] += 1
            continue
        if not text or not title:
            dropped["empty description or headline"] += 1
            continue
        fields = {"text": text, "title": title}
        gold = title
        if categories:
            raw = clean(rec["category"]).upper()
            category = CATEGORY_MAP.get(raw)
            if category is None:
                dropped[f"category {raw!r} has no LaMP-2N counterpart"] += 1
                continue
            fields["category"] = category
            gold = category
        item = Item(id=str(n), fields=fields, date=date, order=(-n,), query=({"text": text}, gold),
                    key=text_key(text))
        users.setdefault(slug(name_key(author)), []).append(item)
    notes = ["user = first named author (agencies/roles skipped); names merged case/accent-insensitively"]
    if categories:
        notes.append("HuffPost categories mapped onto the 15 LaMP-2N labels; others dropped (see 'dropped')")
    return SourceData(users, dropped, notes)


def load_categories(source: Source, seed: int) -> SourceData:
    """LaMP-2N items: ``{id, text, title, category, date}``."""
    return _read(source, categories=True)


def load_headlines(source: Source, seed: int) -> SourceData:
    """LaMP-4 items: ``{id, text, title, date}``."""
    return _read(source, categories=False)
