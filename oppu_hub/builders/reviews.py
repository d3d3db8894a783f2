"""LaMP-3 (product rating) from Amazon Review Data 2018, All_Beauty 5-core (JSON lines: overall, reviewerID,
asin, reviewText, unixReviewTime, ...).

Choices: user = ``reviewerID``; item ``text`` = reviewText (the summary line is not used), ``score`` = the
star rating as "1".."5", ``date`` = unixReviewTime as a UTC day (same-day reviews keep file order). Rows
without review text or with a rating outside 1..5 are dropped. The 5-core file repeats one review under
several product variants (asins); repeated texts of a reviewer keep only the earliest copy, so a query's
text never reappears in its own profile. After that, few reviewers keep long histories (the file has at most
12 reviews per reviewer), so the task is small.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from .base import Item, Source, SourceData, SourceError, clean, read_jsonl, require, text_key

REVIEWS_FILE = "amazon_reviews_2018_5core/All_Beauty_5.json.gz"


def load_reviews(source: Source, seed: int) -> SourceData:
    """LaMP-3 items: ``{id, text, score, date}``."""
    path = require(source, REVIEWS_FILE)
    users: dict[str, list[Item]] = {}
    dropped: Counter[str] = Counter()
    for n, rec in read_jsonl(path, required=("overall", "reviewerID", "unixReviewTime")):
        text = clean(rec.get("reviewText"))
        if not text:
            dropped["no review text"] += 1
            continue
        try:
            stars = float(rec["overall"])
            stamp = int(rec["unixReviewTime"])
        except (TypeError, ValueError):
            raise SourceError(f"{path}: line {n}: bad overall/unixReviewTime "
                              f"{rec['overall']!r}/{rec['unixReviewTime']!r}") from None
        if stars not in (1, 2, 3, 4, 5):
            dropped["rating outside 1..5"] += 1
            continue
        score = str(int(stars))
        date = datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%d")
        item = Item(id=str(n), fields={"text": text, "score": score}, date=date, order=(stamp, n),
                    query=({"text": text}, score), key=text_key(text))
        users.setdefault(str(rec["reviewerID"]), []).append(item)
    return SourceData(users, dropped, ["user = reviewerID; repeated review texts of a reviewer keep the earliest"])
