"""LaMP-2M (movie tagging) from MovieLens ml-latest-small tags, joined through ``links.tmdbId`` to TMDB
overviews (``tmdb_5000_movies.csv.gz`` first, then ``top10K-TMDB-movies.csv.gz``).

Choices: only tags equal to one of the 15 LaMP-2M tags (case-insensitive, whitespace collapsed) are kept;
all other tags are dropped and counted. User = MovieLens ``userId``. Item: ``description`` = the TMDB
overview, ``tag`` = the LaMP tag, ``date`` = the tag timestamp (UTC, ``YYYY-MM-DD HH:MM:SS``). Tags of movies
with no tmdbId or no non-empty TMDB overview are dropped. When a user gave one movie several LaMP tags, the
earliest is kept (one item per user and movie, so a query movie never sits in its own profile). The subset is
thin (tens of users); it is still real data.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from ..tasks import MOVIE_TAGS
from .base import Item, Source, SourceData, SourceError, clean, read_csv, require, require_any

TAGS_FILE = "movielens/ml-latest-small_tags.csv"
LINKS_FILE = "movielens/ml-latest-small_links.csv"
TMDB_FILES = ("movielens/tmdb_5000_movies.csv.gz", "movielens/top10K-TMDB-movies.csv.gz")


def load_movies(source: Source, seed: int) -> SourceData:
    """LaMP-2M items: ``{id, description, tag, date}`` (id = MovieLens movieId)."""
    tags_path, links_path = require(source, TAGS_FILE), require(source, LINKS_FILE)
    overviews: dict[str, str] = {}
    for path in require_any(source, TMDB_FILES).values():
        for _, row in read_csv(path, required=("id", "overview")):
            text = clean(row["overview"])
            if text and row["id"].strip() not in overviews:
                overviews[row["id"].strip()] = text
    tmdb = {row["movieId"].strip(): row["tmdbId"].strip().removesuffix(".0")
            for _, row in read_csv(links_path, required=("movieId", "tmdbId"))}
    lamp_tags = {t.casefold(): t for t in MOVIE_TAGS}
    dropped: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    rows = []
    for n, row in read_csv(tags_path, required=("userId", "movieId", "tag", "timestamp")):
        try:
            stamp = int(row["timestamp"])
        except ValueError:
            raise SourceError(f"{tags_path}: row {n}: bad timestamp {row['timestamp']!r}") from None
        rows.append((stamp, n, row))
    users: dict[str, list[Item]] = {}
    for stamp, n, row in sorted(rows, key=lambda r: (r[0], r[1])):
        tag = lamp_tags.get(clean(row["tag"]).casefold())
        if tag is None:
            dropped["tag is not one of the 15 LaMP-2M tags"] += 1
            continue
        user, movie = row["userId"].strip(), row["movieId"].strip()
        description = overviews.get(tmdb.get(movie, ""), "")
        if not description:
            dropped["movie has no TMDB overview"] += 1
            continue
        if (user, movie) in seen:
            dropped["another LaMP tag of a movie the user already tagged"] += 1
            continue
        seen.add((user, movie))
        date = datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        users.setdefault(user, []).append(Item(
            id=movie, fields={"description": description, "tag": tag}, date=date, order=(stamp, n),
            query=({"description": description}, tag), key=f"movie {movie}"))
    return SourceData(users, dropped, ["only the 15 LaMP tags (case-insensitive); description = TMDB overview"])
