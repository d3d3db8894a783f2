"""LaMP-7 (tweet paraphrasing), **weak**, from Twitter US Airline Sentiment (CSV saved through Excel: ids lost
precision, dates are ``dd-mm-yyyy H.MM``).

Choices: user = the ``name`` column; item ``text`` = the tweet (HTML entities decoded, whitespace collapsed),
``date`` = ``YYYY-MM-DD HH:MM`` (same-minute tweets keep file order reversed; the file is newest first), id =
the CSV row number (the tweet ids are mangled). A user's repeated tweet texts keep the earliest.

The official query is a plain-text paraphrase of the held-out tweet that LaMP produced with an LLM. No LLM is
used here: the query text is a deterministic light normalisation of the tweet (:func:`plain_text`: @mentions
and URLs removed, "#" dropped from hashtags, "RT" removed) and the gold is the original tweet. The task thus
mostly measures restoring the user's mentions/hashtags/style, not real paraphrasing, and the data is thin and
narrow (complaints to airlines over 9 days). Report results on it as weak.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .base import Item, Source, SourceData, SourceError, clean, read_csv, require, text_key

TWEETS_FILE = "airline_tweets/Tweets_airline_excel_mangled.csv.gz"


def plain_text(tweet: str) -> str:
    """The query text of a tweet: no @mentions, URLs, "RT" or "#" signs; whitespace collapsed."""
    text = re.sub(r"https?://\S+|www\.\S+", " ", tweet)
    text = re.sub(r"(?<!\w)@\w+:?", " ", text)
    text = re.sub(r"^\s*RT\b:?", " ", text)
    text = re.sub(r"(?<!\w)#(\w)", r"\1", text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", clean(text))
    return text.strip(" -:")


def _date(value: str, path: Path, n: int) -> str:
    match = re.fullmatch(r"(\d{1,2})-(\d{1,2})-(\d{4}) (\d{1,2})[.:](\d{2})(?::\d{2})?", value.strip())
    if match is None:
        raise SourceError(f"{path}: row {n}: tweet_created {value!r} is not 'dd-mm-yyyy HH.MM'")
    day, month, year, hour, minute = match.groups()
    return f"{year}-{int(month):02d}-{int(day):02d} {int(hour):02d}:{minute}"


def load_tweets(source: Source, seed: int) -> SourceData:
    """LaMP-7 items: ``{id, text, date}``; query = (plain_text(tweet), tweet)."""
    path = require(source, TWEETS_FILE)
    users: dict[str, list[Item]] = {}
    dropped: Counter[str] = Counter()
    for n, row in read_csv(path, required=("name", "text", "tweet_created")):
        text, user = clean(row["text"]), row["name"].strip()
        if not text or not user:
            dropped["no text or no user name"] += 1
            continue
        plain = plain_text(text)
        query = ({"text": plain}, text) if len(plain.split()) >= 2 else None
        date = _date(row["tweet_created"], path, n)
        users.setdefault(user, []).append(Item(id=str(n), fields={"text": text}, date=date, order=(-n,),
                                               query=query, key=text_key(text)))
    notes = ["WEAK: query text = deterministic normalisation of the held-out tweet (no LLM paraphrase); "
             "gold = the original tweet"]
    return SourceData(users, dropped, notes)
