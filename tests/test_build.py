"""The LaMP-format data builders (``oppu_hub.builders``): synthetic raw files in the real formats, plus one
build from the real shared sources when they are present."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oppu_hub.builders import BuildConfig, EmptyBuildError, SourceError, TargetExistsError, build, format_summary
from oppu_hub.builders.citations import CITATIONS_FILE, METADATA_FILE, parse_authors
from oppu_hub.builders.news import NEWS_FILE, first_author
from oppu_hub.builders.papers import load_papers
from oppu_hub.builders.tweets import plain_text
from oppu_hub.cli import main
from oppu_hub.data import SPLITS, LampSplit, load_task_split
from oppu_hub.io import read_json
from oppu_hub.tasks import MOVIE_TAGS, NEWS_CATEGORIES, get_task

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# --- synthetic raw files ---------------------------------------------------------------------------------
def _gz_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


NEWS_USERS = {"Alice Smith": 12, "Bob Jones": 10, "Carol White": 9, "Dan Brown": 8, "Eve Black": 7,
              "Fay Green": 7, "Gus Grey": 2}
NEWS_CATS = ["POLITICS", "TECH", "WELLNESS", "U.S. NEWS", "COMEDY", "SPORTS"]


def write_news(src: Path) -> dict[str, tuple[str, str, str]]:
    """HuffPost-style file (newest first); returns {description: (user, date, raw category)}."""
    rows, truth = [], {}
    for u, (name, n) in enumerate(NEWS_USERS.items()):
        for i in range(n):
            text = f"{name} reports story number {i} on topic {u}."
            cat = NEWS_CATS[(i + u) % len(NEWS_CATS)]
            authors = name
            if name == "Alice Smith" and i == 3:
                authors = "ÁLICE SMITH"  # merged with Alice Smith
            if name == "Alice Smith" and i == 5:
                authors = "Alice Smith and Bob Jones, AP"  # first author only
            if name == "Bob Jones" and i == 2:
                authors = "By Bob Jones, AP"
            date = f"2020-{1 + u % 3:02d}-{i + 1:02d}"
            rows.append({"link": f"https://x/{u}/{i}", "headline": f"Headline {u}-{i}", "category": cat,
                         "short_description": text, "authors": authors, "date": date})
            truth[text] = (name, date, cat)
    rows.append({"link": "x", "headline": "No author", "category": "POLITICS", "short_description": "anon",
                 "authors": "", "date": "2020-01-01"})
    rows.sort(key=lambda r: r["date"], reverse=True)
    _gz_lines(src / "news_category/News_Category_Dataset_v3.first10000.json.gz",
              [json.dumps(r, ensure_ascii=False) for r in rows])
    return truth


def write_reviews(src: Path) -> None:
    lines = []
    for u in range(6):
        for i in range(6 + u):
            lines.append(json.dumps({"overall": float(1 + (i + u) % 5), "reviewerID": f"R{u}", "asin": f"B{i}",
                                     "reviewText": f"review {i} by {u}", "unixReviewTime": 1_400_000_000 + i * 86400}))
    # the same text again under another asin: only the earliest copy is kept
    lines.append(json.dumps({"overall": 5.0, "reviewerID": "R0", "asin": "BX", "reviewText": "review 0 by 0",
                             "unixReviewTime": 1_500_000_000}))
    lines.append(json.dumps({"overall": 5.0, "reviewerID": "R0", "asin": "BY", "unixReviewTime": 1_500_000_000}))
    _gz_lines(src / "amazon_reviews_2018_5core/All_Beauty_5.json.gz", lines)


def write_movies(src: Path) -> None:
    d = src / "movielens"
    d.mkdir(parents=True, exist_ok=True)
    tags = []
    for u in range(1, 6):
        for m in range(8):
            tag = MOVIE_TAGS[(m + u) % len(MOVIE_TAGS)]
            tags.append([u, 100 + m, tag.upper() if m % 2 else tag, 1_500_000_000 + 1000 * m])
        tags.append([u, 100, "funny", 1_400_000_000])  # not a LaMP tag
    tags.append([1, 999, "comedy", 1_600_000_000])  # movie without an overview
    (d / "ml-latest-small_tags.csv").write_text(_csv_text(["userId", "movieId", "tag", "timestamp"], tags))
    links = [[100 + m, f"0{m}", str(5000 + m)] for m in range(8)] + [[999, "0999", ""]]
    (d / "ml-latest-small_links.csv").write_text(_csv_text(["movieId", "imdbId", "tmdbId"], links))
    tmdb = _csv_text(["id", "title", "overview"], [[5000 + m, f"M{m}", f"Overview of movie {m}."] for m in range(8)])
    _gz_lines(d / "tmdb_5000_movies.csv.gz", tmdb.splitlines())


def write_papers(src: Path) -> None:
    rows = []

    def paper(pid, year, authors, ids=None, abstract=True):
        row = {"venue": "nips", "year": year, "id": pid, "title": f"Paper {pid}", "authors": authors,
               "abstract": f"We study problem {pid} carefully." if abstract else ""}
        if ids:
            row["authorids"] = ";".join(ids)
        rows.append(row)

    for k in range(8):  # Yan: papers 0..7; Xu coauthors 3..7 and writes 8 alone later
        paper(f"p{k}", 2010 + k, ["Yan Tang", "Xu Lin"] if k >= 3 else ["Yan Tang"])
    paper("p8", 2019, ["Xu Lin"])
    for k in range(3):
        paper(f"q{k}", 2011 + k, ["Xu Lin"])
    for k in range(7):  # a shared name told apart by OpenReview ids
        paper(f"w{k}", 2010 + k, ["Wei Wang", "Ada Lovelace"], ids=["~Wei_Wang1", "~Ada_Lovelace1"])
    paper("w-other", 2015, ["Wei Wang"], ids=["~Wei_Wang2"])
    paper("w-noid", 2016, ["Wei Wang", "Ada Lovelace"])  # Wei Wang unattributed; Ada (unique) kept
    paper("dup", 2018, ["Ada Lovelace"], abstract=False)
    _gz_lines(src / "paperlists/paperlists_ml_nlp_cv.jsonl.gz", [json.dumps(r) for r in rows])


AAN_AUTHORS = {"Smith, John": 9, "Doe, Jane": 7, "Daum&eacute; III, Hal": 6, "Roe, Richard": 6}


def write_aan(src: Path) -> dict[str, set[str]]:
    """AAN metadata + citation edges; returns {title: titles it cites}."""
    blocks, edges, titles, cites = [], [], {}, {}
    pool = [f"X{k:02d}" for k in range(20)]
    for k, pid in enumerate(pool):  # papers the users cite (or not)
        titles[pid] = f"Background Work {k}"
        blocks.append(f"id = {{{pid}}}\nauthor = {{Other, Person}}\ntitle = {{{titles[pid]}}}\n"
                      f"venue = {{ACL}}\nyear = {{{1990 + k % 5}}}")
    for u, (author, n) in enumerate(AAN_AUTHORS.items()):
        for i in range(n):
            pid = f"P{u}-{i}"
            titles[pid] = f"Study {i} of author {u}"
            blocks.append(f"id = {{{pid}}}\nauthor = {{{author}}}\ntitle = {{{titles[pid]}}}\n"
                          f"venue = {{ACL}}\nyear = {{{2000 + i}}}")
            for c in (pool[(u + i) % 20], pool[(u + 2 * i + 7) % 20]):
                edges.append(f"{pid} , {c}")
                cites.setdefault(titles[pid], set()).add(titles[c])
    edges.append("P0-0 , NOT-IN-METADATA")
    meta = "\n\n".join(blocks) + "\n\n"
    path = src / "aan/acl-metadata.txt.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(meta.encode("utf-8") + "id = {Z1}\nauthor = {Smith, John}\ntitle = {ELRA\u2019s Services}\n"
                "venue = {LREC}\nyear = {1999}\n".encode("cp1252"))
    _gz_lines(src / "aan/acl.txt.gz", edges)
    return cites


def write_tweets(src: Path) -> None:
    header = ["tweet_id", "airline_sentiment", "name", "text", "tweet_created"]
    rows = []
    for u in range(5):
        for i in range(6 + u):
            rows.append(["5.70306E+17", "negative", f"user{u}", f"@united flight {i} was late #fail http://t.co/x{i}",
                         f"{16 + i % 8}-02-2015 {i % 24}.{(u * 7) % 60:02d}"])
    _gz_lines(src / "airline_tweets/Tweets_airline_excel_mangled.csv.gz", _csv_text(header, rows).splitlines())


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    src = tmp_path / "raw"
    write_news(src)
    write_reviews(src)
    write_movies(src)
    write_papers(src)
    write_aan(src)
    write_tweets(src)
    return src


def _cfg(src: Path, out: Path, **kw) -> BuildConfig:
    base = dict(test_users=2, dev_users=1, min_history=3, max_test_fraction=0.5)
    return BuildConfig(src, out, **{**base, **kw})


def _user_split(out: Path, task: str, user: str) -> LampSplit:
    """The split of ``out/task`` that holds ``user``."""
    return next(d for d in (load_task_split(out, task, s) for s in SPLITS) if user in d.user_ids)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- tests ----------------------------------------------------------------------------------------------
def test_news_time_split_and_user_split(raw: Path, tmp_path: Path):
    truth = write_news(raw)
    out = tmp_path / "out"
    manifests = build(_cfg(raw, out, tasks=["LaMP-4"]), progress=False)
    task = get_task("LaMP-4")
    by_split = {s: load_task_split(out, task, s) for s in SPLITS}
    owners = {}
    for split, data in by_split.items():
        for q in data.questions:
            assert owners.setdefault(q.user_id, split) == split, "a user is in two splits"
            text = q.fields(task)["text"]
            name, qdate, _ = truth[text]
            assert q.user_id == name.lower().replace(" ", "-")
            assert q.gold.startswith("Headline ")
            dates = [p["date"] for p in q.profile]
            assert dates == sorted(dates) and all(d < qdate for d in dates)
            assert text not in {p["text"] for p in q.profile}
            # the profile is every earlier item of the user, and only theirs
            earlier = sorted(d for t, (n, d, _) in truth.items() if n == name and d < qdate)
            assert dates == earlier
            assert all(truth[p["text"]][0] == name for p in q.profile)
    # the latest item of each user is its query; test + dev = the 3 most active users (half of the 6 eligible)
    held = sorted(u for u in owners if owners[u] != "train")
    assert held == ["alice-smith", "bob-jones", "carol-white"]
    assert len([u for u in owners if owners[u] == "dev"]) == 1
    assert "gus-grey" not in owners  # too little history
    m = manifests["LaMP-4"]
    assert m["counts"]["test"]["users"] == 2 and m["dropped"]["no author"] == 1
    assert m["counts"]["train"]["history_max"] == 7  # dan-brown: 8 items
    assert "LaMP-4" in format_summary(manifests) and "test" in format_summary(manifests)


def test_news_category_mapping_drops_and_counts(raw: Path, tmp_path: Path):
    truth = write_news(raw)
    out = tmp_path / "out"
    m = build(_cfg(raw, out, tasks=["LaMP-2N"]), progress=False)["LaMP-2N"]
    unmapped = {"U.S. NEWS", "COMEDY"}
    expected = {c: sum(1 for _, _, cat in truth.values() if cat == c) for c in unmapped}
    for c, n in expected.items():
        assert m["dropped"][f"category {c!r} has no LaMP-2N counterpart"] == n
    for split in SPLITS:
        for q in load_task_split(out, "LaMP-2N", split).questions:
            assert q.gold in NEWS_CATEGORIES
            for p in q.profile:
                assert p["category"] in NEWS_CATEGORIES
                assert truth[p["text"]][2] not in unmapped
                assert set(p) == {"id", "text", "title", "category", "date"}
    cats = {truth[q.fields(get_task("LaMP-2N"))["text"]][2]
            for q in load_task_split(out, "LaMP-2N", "train").questions}
    assert not cats & unmapped


def test_first_author_and_name_merging():
    assert first_author("Eric Tucker and Mary Clare Jalonick, AP") == "Eric Tucker"
    assert first_author("By SCOTT BAUER, AP") == "SCOTT BAUER"
    assert first_author("AP, Reuters") is None
    assert first_author("") is None


def test_every_task_loads_back_and_is_deterministic(raw: Path, tmp_path: Path):
    out = tmp_path / "a"
    manifests = build(_cfg(raw, out), progress=False)
    assert set(manifests) == {"LaMP-1", "LaMP-2N", "LaMP-2M", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-7"}
    for name, m in manifests.items():
        task = get_task(name)
        assert m["status"] == "built"
        users: dict[str, str] = {}
        for split in SPLITS:
            data = load_task_split(out, task, split)
            assert len(data.questions) == m["counts"][split]["queries"]
            for q in data.questions:
                assert users.setdefault(q.user_id, split) == split
                assert len(q.profile) >= 3
                assert all(set(p) == {*task.profile_keys, "date"} for p in q.profile)
                assert len({p["id"] for p in q.profile}) == len(q.profile)
        assert m["counts"]["test"]["queries"] > 0, name
    # a second build, in another process with another hash seed, gives the same bytes
    code = ("import sys; from oppu_hub.builders import BuildConfig, build; "
            "build(BuildConfig(sys.argv[1], sys.argv[2], test_users=2, dev_users=1, min_history=3), progress=False)")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(raw), str(tmp_path / "b")], check=True, cwd=REPO, env=env)
    assert _files(out) == _files(tmp_path / "b")


def test_idempotent_and_refuses_other_config(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    build(_cfg(raw, out, tasks=["LaMP-3"]), progress=False)
    before = _files(out)
    mtime = (out / "LaMP-3" / "test_questions.json").stat().st_mtime_ns
    again = build(_cfg(raw, out, tasks=["LaMP-3"]), progress=False)
    assert again["LaMP-3"]["status"] == "up to date"
    assert _files(out) == before
    assert (out / "LaMP-3" / "test_questions.json").stat().st_mtime_ns == mtime
    with pytest.raises(TargetExistsError, match="force=True"):
        build(_cfg(raw, out, tasks=["LaMP-3"], seed=7), progress=False)
    assert _files(out) == before
    forced = build(_cfg(raw, out, tasks=["LaMP-3"], seed=7, force=True), progress=False)
    assert forced["LaMP-3"]["status"] == "rebuilt" and forced["LaMP-3"]["config"]["seed"] == 7
    # a hand-edited output is not silently replaced either
    (out / "LaMP-3" / "dev_outputs.json").write_text("{}")
    with pytest.raises(TargetExistsError, match="changed"):
        build(_cfg(raw, out, tasks=["LaMP-3"], seed=7), progress=False)
    # nor a folder not written by the builder
    (out / "LaMP-4").mkdir()
    with pytest.raises(TargetExistsError, match="manifest"):
        build(_cfg(raw, out, tasks=["LaMP-4"]), progress=False)


def test_reviews_repeated_text_never_leaks(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    m = build(_cfg(raw, out, tasks=["LaMP-3"]), progress=False)["LaMP-3"]
    assert m["dropped"]["no review text"] == 1
    assert m["dropped"]["repeated text of the same user (earliest kept)"] == 1
    test, dev = load_task_split(out, "LaMP-3", "test"), load_task_split(out, "LaMP-3", "dev")
    assert sorted(test.user_ids + dev.user_ids) == ["R3", "R4", "R5"] and len(test.user_ids) == 2
    for q in test.questions:
        assert q.fields(get_task("LaMP-3"))["text"] not in {p["text"] for p in q.profile}
        assert q.gold in {"1", "2", "3", "4", "5"}


def test_max_history_keeps_most_recent_and_more_queries_per_user(raw: Path, tmp_path: Path):
    full = tmp_path / "full"
    build(_cfg(raw, full, tasks=["LaMP-3"]), progress=False)
    capped = tmp_path / "capped"
    build(_cfg(raw, capped, tasks=["LaMP-3"], max_history=3), progress=False)
    for split in SPLITS:
        for a, b in zip(load_task_split(full, "LaMP-3", split).questions,
                        load_task_split(capped, "LaMP-3", split).questions, strict=True):
            assert b.profile == a.profile[-3:] and b.gold == a.gold
    two = tmp_path / "two"
    build(_cfg(raw, two, tasks=["LaMP-3"], queries_per_user=2), progress=False)
    one, split = _user_split(full, "LaMP-3", "R5"), _user_split(two, "LaMP-3", "R5")
    qs = split.user_questions("R5")
    # both queries share the profile before the earlier one: the Q=1 profile minus the new query
    assert len(qs) == 2 and qs[0].profile == qs[1].profile == one.user_questions("R5")[0].profile[:-1]
    assert [q.fields(get_task("LaMP-3"))["text"] for q in qs] == ["review 9 by 5", "review 10 by 5"]
    assert split.user_history("R5") == qs[0].profile


def test_queries_share_the_profile_before_the_earliest_query(raw: Path, tmp_path: Path):
    truth = write_news(raw)
    task = get_task("LaMP-4")
    out, capped = tmp_path / "out", tmp_path / "capped"
    build(_cfg(raw, out, tasks=["LaMP-4"], queries_per_user=3), progress=False)
    build(_cfg(raw, capped, tasks=["LaMP-4"], queries_per_user=3, max_history=4), progress=False)
    seen = set()
    for split in SPLITS:
        data, cut = load_task_split(out, task, split), load_task_split(capped, task, split)
        for user in data.user_ids:
            qs = data.user_questions(user)
            name = truth[qs[0].fields(task)["text"]][0]
            dates = sorted(d for n, d, _ in truth.values() if n == name)
            # the user's 3 latest items are the queries, and all share the profile before the earliest one
            assert sorted(truth[q.fields(task)["text"]][1] for q in qs) == dates[-3:]
            assert all(q.profile == qs[0].profile for q in qs)
            assert [p["date"] for p in qs[0].profile] == dates[:-3]
            assert {q.gold for q in qs}.isdisjoint(p["title"] for p in qs[0].profile)
            assert data.user_history(user) == qs[0].profile  # what the user adapter trains on
            assert all(q.profile == qs[0].profile[-4:] for q in cut.user_questions(user))
            seen.add(user)
    assert len(seen) == 6 and "gus-grey" not in seen  # gus has 2 items: no query with >= 3 before it


def test_every_task_with_several_queries_per_user_keeps_answers_out_of_profiles(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    manifests = build(_cfg(raw, out, queries_per_user=2), progress=False)
    answer_field = {"LaMP-4": "title", "LaMP-5": "title", "LaMP-7": "text"}  # tasks whose gold is an item text
    for name in manifests:
        task = get_task(name)
        splits = {s: load_task_split(out, task, s) for s in SPLITS}
        assert max(len(d.user_questions(u)) for d in splits.values() for u in d.user_ids) == 2, name
        for data in splits.values():
            for user in data.user_ids:
                qs = data.user_questions(user)
                assert all(q.profile == qs[0].profile for q in qs) and data.user_history(user) == qs[0].profile
                if name in answer_field:
                    assert {q.gold for q in qs}.isdisjoint(p[answer_field[name]] for p in qs[0].profile), name
        if name in ("LaMP-4", "LaMP-5"):  # unique titles: no held-out answer in a lower-priority split
            golds = {s: {q.gold for q in splits[s].questions} for s in SPLITS}
            for split, below in (("test", ("dev", "train")), ("dev", ("train",))):
                profiles = {p["title"] for s in below for q in splits[s].questions for p in q.profile}
                assert not golds[split] & profiles, (name, split)


def test_leak_guard_holds_every_query_of_a_user(tmp_path: Path):
    src = tmp_path / "raw"
    rows = [{"year": 2000 + k, "title": f"T{k}", "abstract": f"A{k}",
             "authors": ["Ann Lee"] + (["Ben Kim"] if k >= 4 else [])}
            for k in range(10)]  # Ann's two latest papers T8, T9 (her test queries) are Ben's too
    rows.append({"year": 2020, "title": "Ben later", "abstract": "B", "authors": ["Ben Kim"]})
    _gz_lines(src / "paperlists/paperlists_ml_nlp_cv.jsonl.gz", [json.dumps(r) for r in rows])
    out = tmp_path / "out"
    m = build(BuildConfig(src, out, tasks=["LaMP-5"], test_users=1, dev_users=0, min_history=3, queries_per_user=2,
                          max_test_fraction=1.0), progress=False)["LaMP-5"]
    test, train = load_task_split(out, "LaMP-5", "test"), load_task_split(out, "LaMP-5", "train")
    ann = test.user_questions("ann-lee")
    assert [q.gold for q in ann] == ["T8", "T9"]
    assert [p["title"] for p in ann[0].profile] == [f"T{k}" for k in range(8)] and ann[1].profile == ann[0].profile
    ben = train.user_questions("ben-kim")  # his queries were T9 and "Ben later"; T8 and T9 are removed
    assert [q.gold for q in ben] == ["Ben later"]
    assert [p["title"] for p in ben[0].profile] == ["T4", "T5", "T6", "T7"]
    assert m["dropped"]["items removed: held-out query of a higher-priority split"] == 2
    assert m["dropped"]["queries removed: held-out query of a higher-priority split"] == 1


def _write_ranked_reviews(src: Path, n_users: int) -> dict[str, int]:
    """Reviewers U00.. with 4, 5, 6... distinct reviews; returns {user: history before the last review}."""
    lines, history = [], {}
    for u in range(n_users):
        user = f"U{u:02d}"
        history[user] = 3 + u
        for i in range(4 + u):
            lines.append(json.dumps({"overall": float(1 + i % 5), "reviewerID": user, "asin": f"B{i}",
                                     "reviewText": f"review {i} by {user}", "unixReviewTime": 1_400_000_000 + i}))
    _gz_lines(src / "amazon_reviews_2018_5core/All_Beauty_5.json.gz", lines)
    return history


def test_dev_is_drawn_like_test_from_the_most_active_users(tmp_path: Path):
    src = tmp_path / "raw"
    history = _write_ranked_reviews(src, 40)
    ranked = sorted(history, key=lambda u: -history[u])

    def assign(out: str, **kw) -> dict[str, list[str]]:
        build(BuildConfig(src, tmp_path / out, tasks=["LaMP-3"], min_history=3, **kw), progress=False)
        return {s: load_task_split(tmp_path / out, "LaMP-3", s).user_ids for s in SPLITS}

    users = assign("a", test_users=8, dev_users=4)
    assert len(users["test"]) == 8 and len(users["dev"]) == 4 and not set(users["test"]) & set(users["dev"])
    assert set(users["test"]) | set(users["dev"]) == set(ranked[:12])  # the pool: the 12 longest histories
    assert sorted(users["train"]) == sorted(ranked[12:])
    # one dev user from each quarter of the ranked pool, so dev histories spread like test's
    assert sorted(ranked.index(u) // 3 for u in users["dev"]) == [0, 1, 2, 3]
    assert min(history[u] for u in users["dev"]) >= min(history[u] for u in ranked[:12])
    draws = {tuple(assign(f"seed{s}", test_users=8, dev_users=4, seed=s)["dev"]) for s in range(4)}
    assert len(draws) > 1  # the seed draws dev
    # a pool capped at half of the 40 users shrinks test and dev in proportion (20 * 20 / 120 -> 3 dev)
    users = assign("capped", test_users=100, dev_users=20)
    assert (len(users["test"]), len(users["dev"]), len(users["train"])) == (17, 3, 20)
    assert set(users["test"]) | set(users["dev"]) == set(ranked[:20])


def test_empty_build_fails_and_names_the_reason(tmp_path: Path):
    src = tmp_path / "raw"
    lines = []
    for u in range(3):  # 8 reviews each, but only 4 distinct texts
        for i in range(8):
            lines.append(json.dumps({"overall": 5.0, "reviewerID": f"R{u}", "asin": f"B{i}",
                                     "reviewText": f"review {i % 4} by {u}", "unixReviewTime": 1_400_000_000 + i}))
    _gz_lines(src / "amazon_reviews_2018_5core/All_Beauty_5.json.gz", lines)
    out = tmp_path / "out"
    with pytest.raises(EmptyBuildError, match=r"LaMP-3: 0 eligible users: none of the 3 source users") as e:
        build(BuildConfig(src, out, tasks=["LaMP-3"], min_history=5), progress=False)
    assert "12 repeated text of the same user (earliest kept)" in str(e.value)
    assert "3 users with fewer than 5 items before a possible query" in str(e.value)
    assert not (out / "LaMP-3").exists()
    _write_ranked_reviews(src, 1)  # one eligible user is no test split either (half of 1 user is 0)
    with pytest.raises(EmptyBuildError, match=r"LaMP-3: 0 test users: max_test_fraction=0.5 of 1 eligible"):
        build(BuildConfig(src, out, tasks=["LaMP-3"], min_history=3), progress=False)
    _write_ranked_reviews(src, 4)
    assert build(BuildConfig(src, out, tasks=["LaMP-3"], min_history=3), progress=False)["LaMP-3"]["status"] == "built"


def test_lamp1_gold_is_the_cited_paper(raw: Path, tmp_path: Path):
    cites = write_aan(raw)
    out = tmp_path / "out"
    m = build(_cfg(raw, out, tasks=["LaMP-1"]), progress=False)["LaMP-1"]
    assert m["dropped"]["citation edge with an end outside the metadata"] == 1
    task = get_task("LaMP-1")
    golds = []
    n = 0
    for split in SPLITS:
        for q in load_task_split(out, task, split).questions:
            f = q.fields(task)
            cited = cites[f["title"]]
            right, wrong = (f["option1"], f["option2"]) if q.gold == "[1]" else (f["option2"], f["option1"])
            assert right in cited and wrong not in cited
            assert all(p["abstract"] == "" for p in q.profile)
            golds.append(q.gold)
            n += 1
    assert n == 4 and set(golds) <= {"[1]", "[2]"}
    users = {q.user_id for s in SPLITS for q in load_task_split(out, task, s).questions}
    assert "hal-daume-iii" in users
    smith = next(q for s in SPLITS for q in load_task_split(out, task, s).questions if q.user_id == "john-smith")
    assert smith.profile[0]["title"] == "ELRA\u2019s Services"  # a cp1252 line of the metadata
    assert parse_authors("Daum&eacute; III, Hal; Riloff, Ellen; s") == ["Hal Daumé III", "Ellen Riloff"]


def test_papers_author_identity_and_leak_guard(raw: Path, tmp_path: Path):
    data = load_papers(raw, 0)
    assert {"openreview-wei_wang1", "openreview-wei_wang2", "ada-lovelace", "yan-tang", "xu-lin"} <= set(data.users)
    assert "wei-wang" not in data.users
    assert data.dropped["author link: shared name without author id"] == 1
    assert len(data.users["ada-lovelace"]) == 8  # id papers + the name-only one (no-abstract one dropped)
    out = tmp_path / "out"
    build(_cfg(raw, out, tasks=["LaMP-5"], test_users=1, dev_users=0, max_test_fraction=1.0), progress=False)
    test = load_task_split(out, "LaMP-5", "test")
    assert [q.user_id for q in test.questions] == ["xu-lin"]  # 8 earlier papers, the most
    assert test.questions[0].gold == "Paper p8"
    assert [p["date"] for p in test.questions[0].profile] == sorted(p["date"] for p in test.questions[0].profile)
    yan = load_task_split(out, "LaMP-5", "train").user_questions("yan-tang")[0]
    assert yan.gold == "Paper p7" and len(yan.profile) == 7


def test_leak_guard_removes_test_answers_from_train_profiles(tmp_path: Path):
    src = tmp_path / "raw"
    rows = []
    for k in range(9):  # Ann has the longest history and ends on p8, which Ben also wrote
        rows.append({"year": 2000 + k, "title": f"T{k}", "abstract": f"A{k}", "authors": ["Ann Lee"]
                     + (["Ben Kim"] if k >= 4 else [])})
    rows.append({"year": 2020, "title": "Ben later", "abstract": "B", "authors": ["Ben Kim"]})
    _gz_lines(src / "paperlists/paperlists_ml_nlp_cv.jsonl.gz", [json.dumps(r) for r in rows])
    out = tmp_path / "out"
    m = build(BuildConfig(src, out, tasks=["LaMP-5"], test_users=1, dev_users=0, min_history=3,
                          max_test_fraction=1.0), progress=False)["LaMP-5"]
    test, train = load_task_split(out, "LaMP-5", "test"), load_task_split(out, "LaMP-5", "train")
    assert [q.user_id for q in test.questions] == ["ann-lee"] and test.questions[0].gold == "T8"
    ben = train.user_questions("ben-kim")[0]
    assert ben.gold == "Ben later"
    assert "T8" not in {p["title"] for p in ben.profile} and len(ben.profile) == 4
    assert m["dropped"]["items removed: held-out query of a higher-priority split"] == 1


def test_movies_only_lamp_tags_joined_to_overviews(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    m = build(_cfg(raw, out, tasks=["LaMP-2M"]), progress=False)["LaMP-2M"]
    assert m["dropped"]["tag is not one of the 15 LaMP-2M tags"] == 5
    assert m["dropped"]["movie has no TMDB overview"] == 1
    for split in SPLITS:
        for q in load_task_split(out, "LaMP-2M", split).questions:
            assert q.gold in MOVIE_TAGS
            assert all(p["tag"] in MOVIE_TAGS and p["description"].startswith("Overview") for p in q.profile)


def test_tweets_query_is_normalised_tweet():
    assert plain_text("@united flight 3 was late #fail http://t.co/x3") == "flight 3 was late fail"
    assert plain_text("RT @AmericanAir: great crew , thanks!") == "great crew, thanks!"


def test_tweets_build(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    m = build(_cfg(raw, out, tasks=["LaMP-7"]), progress=False)["LaMP-7"]
    assert any("WEAK" in n for n in m["notes"])
    for q in load_task_split(out, "LaMP-7", "test").questions:
        assert q.gold.startswith("@united") and "@" not in q.input
        assert [p["date"] for p in q.profile] == sorted(p["date"] for p in q.profile)


def test_missing_and_malformed_sources(tmp_path: Path):
    src = tmp_path / "raw"
    write_news(src)
    out = tmp_path / "out"
    result = build(BuildConfig(src, out, test_users=2, dev_users=1, min_history=3), progress=False)
    assert result["LaMP-2N"]["status"] == "built"
    assert result["LaMP-3"]["status"] == "skipped" and "All_Beauty_5.json.gz" in result["LaMP-3"]["reason"]
    assert "skipped" in format_summary(result)
    with pytest.raises(SourceError, match="All_Beauty_5.json.gz"):
        build(BuildConfig(src, out, tasks=["LaMP-3"]), progress=False)
    _gz_lines(src / "amazon_reviews_2018_5core/All_Beauty_5.json.gz", ['{"overall": 5.0,', "x"])
    with pytest.raises(SourceError, match=r"All_Beauty_5\.json\.gz: line 1"):
        build(BuildConfig(src, out, tasks=["LaMP-3"]), progress=False)
    with pytest.raises(ValueError, match="min_history"):
        BuildConfig(src, out, min_history=0)
    with pytest.raises(ValueError, match="dev_users is a count"):
        BuildConfig(src, out, dev_users=0.1)
    with pytest.raises(ValueError, match="test_users >= 1"):
        BuildConfig(src, out, test_users=0)


def write_own_news(path: Path, authors: dict[str, int]) -> None:
    """A user's own news slice in the HuffPost JSON-lines shape, with only the fields the news reader needs."""
    cats = ["SPORTS", "TRAVEL", "CRIME"]
    _gz_lines(path, [json.dumps({"headline": f"{name} headline {i}", "category": cats[i % 3], "authors": name,
                                 "short_description": f"{name} on match {i}.", "date": f"2021-03-{i + 1:02d}"})
                     for name, n in authors.items() for i in range(n)])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_own_source_file_builds_its_task_and_is_recorded(raw: Path, tmp_path: Path):
    own = tmp_path / "mine" / "my_news.jsonl.gz"
    write_own_news(own, {"Ann Lee": 7, "Ben Ray": 6, "Cy Ott": 6, "Di Fox": 5})
    out = tmp_path / "out"
    cfg = _cfg(raw, out, tasks=["LaMP-2N", "LaMP-4"], sources=[f"LaMP-2N={own}"])
    manifests = build(cfg, progress=False)
    m = manifests["LaMP-2N"]
    assert m["sources"] == [{"file": NEWS_FILE, "path": str(own.resolve()), "bytes": own.stat().st_size,
                             "sha256": _sha256(own)}]
    assert m["lamp_name"] == "LaMP_2N" and m["source_users"] == 4
    questions = [q for split in SPLITS for q in load_task_split(out, "LaMP-2N", split).questions]
    assert sorted(q.user_id for q in questions) == ["ann-lee", "ben-ray", "cy-ott", "di-fox"]
    assert {q.gold for q in questions} <= {"sports", "travel", "crime"}
    assert all(p["text"].startswith(q.user_id.split("-")[0].title()) for q in questions for p in q.profile)
    # the override is per task: LaMP-4 still reads source_dir's news file
    assert manifests["LaMP-4"]["sources"] == [{"file": NEWS_FILE, "bytes": (raw / NEWS_FILE).stat().st_size,
                                               "sha256": _sha256(raw / NEWS_FILE)}]
    assert build(cfg, progress=False)["LaMP-2N"]["status"] == "up to date"
    write_own_news(own, {"Ann Lee": 8, "Ben Ray": 6, "Cy Ott": 6, "Di Fox": 5})  # another slice, same path
    with pytest.raises(TargetExistsError, match="other sources"):
        build(cfg, progress=False)
    # a build that only reads the user's files needs no source folder; the CLI takes the same entries
    nowhere = tmp_path / "no-sources"
    with pytest.raises(SourceError, match="source folder not found"):
        BuildConfig(nowhere, out)
    assert main(["data", "build", "--source_dir", str(nowhere), "--out_dir", str(tmp_path / "cli"),
                 "--tasks", "LaMP-2N", "--test_users", "2", "--dev_users", "1", "--min_history", "3",
                 "--sources", f"LaMP-2N={own}"]) == 0
    assert read_json(tmp_path / "cli" / "LaMP-2N" / "manifest.json")["sources"][0]["path"] == str(own.resolve())


def test_own_file_for_one_role_of_a_task_with_several(raw: Path, tmp_path: Path):
    other = tmp_path / "other"
    write_aan(other)
    own = other / CITATIONS_FILE
    m = build(_cfg(raw, tmp_path / "out", tasks=["LaMP-1"], sources=[f"LaMP-1:citations={own}"]),
              progress=False)["LaMP-1"]
    assert [s["file"] for s in m["sources"]] == [METADATA_FILE, CITATIONS_FILE]
    assert "path" not in m["sources"][0] and m["sources"][1]["path"] == str(own.resolve())


def test_own_source_file_missing_or_malformed(tmp_path: Path):
    out, own = tmp_path / "out", tmp_path / "own.jsonl.gz"

    def build_news() -> None:
        build(_cfg(tmp_path, out, tasks=["LaMP-2N"], sources=[f"LaMP-2N={own}"]), progress=False)

    with pytest.raises(SourceError, match=r"LaMP-2N: \S*own\.jsonl\.gz: source file not found \(given for LaMP-2N:"):
        build_news()
    with pytest.raises(SourceError, match="given for LaMP-3:reviews"):  # named files are never skipped
        build(_cfg(tmp_path, out, sources=[f"LaMP-3={own}"]), progress=False)
    _gz_lines(own, [json.dumps({"headline": "h", "category": "SPORTS", "short_description": "d", "date": "2021"})])
    with pytest.raises(SourceError, match=r"own\.jsonl\.gz: line 1 lacks \['authors'\]"):
        build_news()
    _gz_lines(own, ["not json"])
    with pytest.raises(SourceError, match=r"own\.jsonl\.gz: line 1 is not valid JSON"):
        build_news()
    own.write_bytes(b"not gzip")
    with pytest.raises(SourceError, match=r"own\.jsonl\.gz: cannot read"):
        build_news()
    assert not (out / "LaMP-2N").exists()
    bad_entries = {
        "LaMP-1=x.gz": r"LaMP-1 reads several files \(metadata, citations\); name one, e.g. LaMP-1:metadata=PATH",
        "LaMP-3:ratings=x.gz": "LaMP-3 has no source file 'ratings'; its files: reviews",
        "LaMP-3": "expected TASK=PATH or TASK:ROLE=PATH",
        "LaMP-2N=": "expected TASK=PATH or TASK:ROLE=PATH",
    }
    for entry, message in bad_entries.items():
        with pytest.raises(ValueError, match=message):
            BuildConfig(tmp_path, out, sources=[entry])
    with pytest.raises(ValueError, match="LaMP-3:reviews is given twice"):
        BuildConfig(tmp_path, out, sources=["LaMP-3=a.gz", "lamp3=b.gz"])
    with pytest.raises(KeyError, match="unknown task 'LaMP-9'"):
        BuildConfig(tmp_path, out, sources=["LaMP-9=x.gz"])
    with pytest.raises(ValueError, match=r"sources are given for LaMP-2N, which tasks \['LaMP-3'\] omit"):
        BuildConfig(tmp_path, out, tasks=["LaMP-3"], sources=["LaMP-2N=x.gz"])


def test_real_shared_data(tmp_path: Path):
    if not (SHARED_DATA / "raw").is_dir():
        pytest.skip(f"real sources not found at {SHARED_DATA} (the shared data folder beside the repo)")
    out = tmp_path / "out"
    manifests = build(BuildConfig(SHARED_DATA, out, tasks=["LaMP-2N", "LaMP-2M", "LaMP-1"]), progress=False)
    for name, m in manifests.items():
        c = m["counts"]
        assert c["test"]["users"] > 0 and c["dev"]["users"] > 0 and c["train"]["users"] > 0, name
        # test and dev come from the most active users: no shorter history than any train user's
        assert min(c["test"]["history_min"], c["dev"]["history_min"]) >= c["train"]["history_max"], name
        owners: dict[str, str] = {}
        for split in SPLITS:
            for q in load_task_split(out, name, split).questions:
                assert owners.setdefault(q.user_id, split) == split
    assert manifests["LaMP-2N"]["dropped"]["category 'U.S. NEWS' has no LaMP-2N counterpart"] > 0
    assert manifests["LaMP-1"]["counts"]["test"]["users"] == 100
    news = manifests["LaMP-2N"]["counts"]
    assert news["test"]["users"] >= 40 and news["dev"]["users"] >= 10
