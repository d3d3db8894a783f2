"""Rebuild LaMP-format tasks from public raw sources (``oppu-hub data build``).

One reader per source (:mod:`.news` LaMP-2N/LaMP-4, :mod:`.reviews` LaMP-3, :mod:`.movies` LaMP-2M,
:mod:`.papers` LaMP-5, :mod:`.citations` LaMP-1, :mod:`.tweets` LaMP-7, weak) yields per-user items; the shared
time-based user split is :mod:`.split`. Each task is written atomically to ``{out_dir}/{task}/`` as
``{split}_questions.json`` + ``{split}_outputs.json`` (official LaMP shape, via :func:`oppu_hub.data.write_split`)
and ``manifest.json`` (sources with hashes, config, counts, drops, content hash). A rebuild with the same
recipe (config, source hashes, builder version) leaves the folder untouched ("up to date"); any other
existing folder is only replaced with ``force=True``. ``BuildConfig.sources`` points a task at the user's own copy
of a source file (another news slice, another Amazon category...). See ``builders/README.md`` for the task recipes
and the fields each source file needs.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data import file_task_name
from ..io import TargetExistsError, atomic_dir, read_json, sha256_file, write_json
from ..tasks import Task, get_task
from . import citations, movies, news, papers, reviews, tweets
from .base import EmptyBuildError, Source, SourceData, SourceError, require_any
from .split import (
    SPLIT_ORDER,
    assign_users,
    content_hash,
    make_questions,
    split_stats,
    timelines,
    write_task_files,
)

__all__ = ["BUILDER_VERSION", "TASK_SOURCES", "BuildConfig", "EmptyBuildError", "SourceError",
           "TargetExistsError", "available_tasks", "build", "build_task", "format_summary", "task_files"]

# Bumped whenever the written files change for the same recipe. 3: output files name LaMP-2N/2M "LaMP_2N" /
# "LaMP_2M" (version 2 wrote "LaMP_2" for both; the golds are the same).
BUILDER_VERSION = 3


@dataclass(frozen=True)
class TaskSource:
    """How one task is built: its source files by role, each a tuple of alternative paths relative to
    ``source_dir`` (every one present is read; at least one is needed), and its reader."""

    files: dict[str, tuple[str, ...]]
    load: Callable[[Source, int], SourceData]


TASK_SOURCES: dict[str, TaskSource] = {
    "LaMP-1": TaskSource({"metadata": (citations.METADATA_FILE,), "citations": (citations.CITATIONS_FILE,)},
                         citations.load_citations),
    "LaMP-2N": TaskSource({"news": (news.NEWS_FILE,)}, news.load_categories),
    "LaMP-2M": TaskSource({"tags": (movies.TAGS_FILE,), "links": (movies.LINKS_FILE,), "overviews": movies.TMDB_FILES},
                          movies.load_movies),
    "LaMP-3": TaskSource({"reviews": (reviews.REVIEWS_FILE,)}, reviews.load_reviews),
    "LaMP-4": TaskSource({"news": (news.NEWS_FILE,)}, news.load_headlines),
    "LaMP-5": TaskSource({"papers": (papers.PAPERS_FILE,)}, papers.load_papers),
    "LaMP-7": TaskSource({"tweets": (tweets.TWEETS_FILE,)}, tweets.load_tweets),
}


@dataclass
class BuildConfig:
    """What to build and how.

    Args:
        source_dir: folder holding the raw sources (``news_category/``, ``paperlists/``...); a folder whose
            ``raw/`` subfolder holds them (e.g. ``../shared/data``) works too.
        out_dir: where task folders ``{out_dir}/{task}/`` are written.
        tasks: task names to build; ``None`` builds every task whose source files exist and skips the others
            with a note. An explicitly named task whose source is missing is an error.
        test_users: test users (>= 1; the paper uses 100), drawn with dev from the pool of the
            ``test_users + dev_users`` most active users (longest history before their earliest query).
        dev_users: dev users (a count >= 0), one drawn with the seed from each equal slice of that ranked pool,
            so dev histories follow the test distribution; the rest of the pool is test. Default 20.
        queries_per_user: each user's latest Q possible queries become questions, all with the one profile
            before the earliest of them (LaMP: 1).
        min_history: the earliest query needs at least this many earlier items of its user (>= 1).
        max_history: cap on profile length in the built data (the most recent items before the earliest query);
            ``None`` keeps all. Unlike the user adapters' ``max_history`` (:func:`oppu_hub.data.newest_items` at
            training time, which cuts only what an adapter trains on), this decides which items the files hold, so
            every method sees the capped history (retrieval, profiles, baselines and adapters alike).
        max_test_fraction: the test + dev pool never takes more than this fraction of the eligible users (test
            and dev shrink in proportion, so thin sources keep train users); 1.0 lets the counts alone decide.
        seed: seeds the dev draw and LaMP-1's reference choice and option order.
        force: replace an existing task folder built with another config/sources (or not by this builder).
        sources: the user's own source files, read instead of ``source_dir``'s: ``TASK=PATH`` for a task that
            reads one file (``LaMP-3=Books_5.json.gz``), ``TASK:ROLE=PATH`` to name the file of a task that reads
            several (``LaMP-1:citations=acl.txt.gz``; roles in :data:`TASK_SOURCES` and ``builders/README.md``).
            Per task: ``LaMP-2N=news.json.gz`` does not change LaMP-4. A task with such a file is built (``tasks``
            ``None``) or must be among ``tasks``; a missing or malformed file is an error, never a skip.
    """

    source_dir: str = field(default_factory=lambda: os.environ.get("OPPU_HUB_SOURCE", "../shared/data"),
                            metadata={"help": "raw source data (default $OPPU_HUB_SOURCE or ../shared/data)"})
    out_dir: str = field(default="data", metadata={"help": "where {task}/{split}_*.json go"})
    tasks: list[str] | None = field(default=None, metadata={"help": "tasks to build (default: all available)"})
    test_users: int = field(default=100, metadata={"help": "test users, from the most active users"})
    dev_users: int = field(default=20, metadata={"help": "dev users, drawn like test from the most active users"})
    queries_per_user: int = field(default=1, metadata={
        "help": "latest items per user that become queries (one shared profile before the earliest)"})
    min_history: int = field(default=5, metadata={"help": "history items the earliest query needs at least"})
    max_history: int | None = field(default=None, metadata={
        "help": "profiles in the built files keep at most the N most recent items (every method sees the cap)"})
    max_test_fraction: float = field(default=0.5, metadata={"help": "test + dev take at most this share of users"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    force: bool = field(default=False, metadata={"help": "replace task folders built with another config"})
    sources: list[str] | None = field(default=None, metadata={
        "help": "your own source files: TASK=PATH or TASK:ROLE=PATH (e.g. LaMP-3=Books_5.json.gz)"})
    _names: tuple[str, ...] = field(init=False, repr=False, default=())
    _own: dict[str, dict[str, Path]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.source_dir, self.out_dir = Path(self.source_dir), Path(self.out_dir)
        if self.tasks is not None:
            if isinstance(self.tasks, str):
                self.tasks = [self.tasks]
            self._names = tuple(dict.fromkeys(get_task(t).name for t in self.tasks))
        if isinstance(self.sources, str):
            self.sources = [self.sources]
        self._own = _parse_sources(self.sources or [])
        outside = [t for t in self._own if self._names and t not in self._names]
        if outside:
            raise ValueError(f"sources are given for {', '.join(outside)}, which tasks {list(self._names)} omit")
        own_only = bool(self._names) and all(set(TASK_SOURCES[t].files) <= set(self._own.get(t, {}))
                                             for t in self._names)
        if not own_only and not self.source_dir.is_dir():
            raise SourceError(f"{self.source_dir}: source folder not found")
        if (self.source_dir / "raw").is_dir() and not any(
                (self.source_dir / rel.split("/")[0]).is_dir() for rel in _all_files()):
            self.source_dir = self.source_dir / "raw"
        checks = {
            "test_users >= 1": self.test_users >= 1,
            "dev_users is a count >= 0": isinstance(self.dev_users, int) and self.dev_users >= 0,
            "queries_per_user >= 1": self.queries_per_user >= 1,
            "min_history >= 1": self.min_history >= 1,
            "max_history is None or >= min_history": self.max_history is None
            or self.max_history >= self.min_history,
            "0 < max_test_fraction <= 1": 0 < self.max_test_fraction <= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid BuildConfig: need {', '.join(bad)}")

    def recipe(self) -> dict[str, Any]:
        """The settings that determine a task's output (recorded in, and compared with, the manifest)."""
        keep = ("test_users", "dev_users", "queries_per_user", "min_history", "max_history",
                "max_test_fraction", "seed")
        return {k: v for k, v in asdict(self).items() if k in keep}


def _all_files() -> list[str]:
    return [news.NEWS_FILE, reviews.REVIEWS_FILE, movies.TAGS_FILE, papers.PAPERS_FILE,
            citations.METADATA_FILE, tweets.TWEETS_FILE]


def _parse_sources(entries: list[str]) -> dict[str, dict[str, Path]]:
    """``{task: {role: path}}`` from ``TASK=PATH`` / ``TASK:ROLE=PATH`` entries (see :class:`BuildConfig`)."""
    own: dict[str, dict[str, Path]] = {}
    for entry in entries:
        key, sep, path = entry.partition("=")
        if not sep or not key.strip() or not path.strip():
            raise ValueError(f"source {entry!r}: expected TASK=PATH or TASK:ROLE=PATH")
        name, _, role = (part.strip() for part in key.partition(":"))
        task = get_task(name).name
        roles = list(TASK_SOURCES[task].files)
        if not role and len(roles) > 1:
            raise ValueError(f"source {entry!r}: {task} reads several files ({', '.join(roles)}); name one, e.g. "
                             f"{task}:{roles[0]}=PATH")
        role = role or roles[0]
        if role not in roles:
            raise ValueError(f"source {entry!r}: {task} has no source file {role!r}; its files: {', '.join(roles)}")
        if role in own.get(task, {}):
            raise ValueError(f"source {entry!r}: {task}:{role} is given twice")
        own.setdefault(task, {})[role] = Path(path.strip()).expanduser()
    return own


def task_files(task: str, source_dir: Path, own: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """The files a task reads, ``{default path relative to source_dir: file}``: ``source_dir``'s, or for a role in
    ``own`` (``{role: path}``) the user's file in place of the role's (first) default. A missing file raises
    SourceError."""
    files: dict[str, Path] = {}
    for role, rels in TASK_SOURCES[task].files.items():
        if own and role in own:
            if not own[role].is_file():
                raise SourceError(f"{own[role]}: source file not found (given for {task}:{role})")
            files[rels[0]] = own[role]
        else:
            files.update(require_any(source_dir, rels))
    return files


def available_tasks(source_dir: str | Path) -> dict[str, str | None]:
    """``{task: None}`` for tasks whose sources exist, ``{task: reason}`` for the others."""
    out: dict[str, str | None] = {}
    for name in TASK_SOURCES:
        try:
            task_files(name, Path(source_dir))
            out[name] = None
        except SourceError as e:
            out[name] = str(e)
    return out


def build(config: BuildConfig, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Build the configured tasks; return ``{task: manifest}``.

    Each returned manifest is the written ``manifest.json`` plus ``status`` ("built", "rebuilt" (forced) or
    "up to date"); skipped tasks appear as ``{"task", "status": "skipped", "reason"}``.
    """
    names = config._names or tuple(TASK_SOURCES)
    hashes: dict[Path, dict[str, Any]] = {}
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(names, desc="data build", unit="task", disable=not progress, file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        try:
            paths = task_files(name, config.source_dir, config._own.get(name))
        except SourceError as e:
            if config._names or name in config._own:
                raise SourceError(f"{name}: {e}") from None
            results[name] = {"task": name, "status": "skipped", "reason": str(e)}
            _say(progress, f"{name}: skipped ({e})")
            continue
        _say(progress, f"{name}: building from {', '.join(map(str, paths.values()))} ...")
        results[name] = build_task(get_task(name), config, paths, hashes)
        _say(progress, f"{name}: {results[name]['status']}")
    return results


def build_task(task: Task, config: BuildConfig, paths: Mapping[str, Path],
               hash_cache: dict[Path, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build one task folder from ``paths`` (:func:`task_files`), or confirm it is up to date; see :func:`build`.
    The manifest lists each file by its default relative path, with ``path`` where a user's own file stood in."""
    cache = {} if hash_cache is None else hash_cache
    sources = []
    for rel, path in paths.items():
        if path not in cache:
            cache[path] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        own = {} if path == Path(config.source_dir) / rel else {"path": str(path.resolve())}
        sources.append({"file": rel, **own, **cache[path]})
    recipe = {"builder_version": BUILDER_VERSION, "config": config.recipe(), "sources": sources}
    folder = Path(config.out_dir) / task.name
    status = "built"
    if folder.exists():
        problem = _difference(folder, recipe)
        if problem is None:
            return {**read_json(folder / "manifest.json"), "status": "up to date"}
        if not config.force:
            raise TargetExistsError(f"{folder} exists and {problem}; pass force=True (--force) to replace it")
        status = "rebuilt"

    data = TASK_SOURCES[task.name].load(paths, config.seed)
    dropped: Counter[str] = Counter(data.dropped)
    users = timelines(data, config.queries_per_user, config.min_history, dropped)
    if not users:
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in dropped.most_common()) or "nothing dropped"
        raise EmptyBuildError(f"{task.name}: 0 eligible users: none of the {len(data.users):,} source users has a "
                              f"possible query after >= {config.min_history} distinct items (dropped: {reasons})")
    assignment = assign_users(users, test_users=config.test_users, dev_users=config.dev_users,
                              max_test_fraction=config.max_test_fraction, seed=config.seed, task=task.name)
    if not assignment["test"]:
        raise EmptyBuildError(f"{task.name}: 0 test users: max_test_fraction={config.max_test_fraction} of "
                              f"{len(users)} eligible users leaves none")
    questions = make_questions(task, users, assignment, min_history=config.min_history,
                               max_history=config.max_history, dropped=dropped)
    with atomic_dir(folder, overwrite=True) as tmp:
        files = write_task_files(task, questions, tmp)
        manifest = {
            "task": task.name,
            "lamp_name": file_task_name(task),
            **recipe,
            "source_users": len(data.users),
            "source_items": len({id(i) for items in data.users.values() for i in items}),
            "eligible_users": len(users),
            "counts": {split: split_stats(questions[split]) for split in SPLIT_ORDER},
            "dropped": dict(sorted(dropped.items())),
            "notes": data.notes,
            "files": files,
            "content_sha256": content_hash(files),
        }
        write_json(tmp / "manifest.json", manifest)
    return {**manifest, "status": status}


def _difference(folder: Path, recipe: dict[str, Any]) -> str | None:
    """``None`` when ``folder`` holds an intact build of ``recipe``, else what differs."""
    path = folder / "manifest.json"
    if not path.is_file():
        return "has no manifest.json (not written by this builder)"
    try:
        old = read_json(path)
    except ValueError as e:
        return f"its manifest is unreadable ({e})"
    for key in ("builder_version", "config", "sources"):
        if old.get(key) != recipe[key]:
            if key == "config":
                diff = {k: (old.get("config", {}).get(k), v) for k, v in recipe["config"].items()
                        if old.get("config", {}).get(k) != v}
                return f"was built with another config (old, new: {diff})"
            return f"was built with other {'sources' if key == 'sources' else 'builder version'}"
    files = old.get("files") or {}
    for name, digest in files.items():
        p = folder / name
        if not p.is_file() or sha256_file(p) != digest:
            return f"its {name} was changed or removed since the build"
    if not files or content_hash(files) != old.get("content_sha256"):
        return "its manifest's content hash does not match"
    return None


def format_summary(manifests: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: task, split, users, queries, mean/min/max history length, status."""
    head = f"{'task':<8} {'split':<6} {'users':>6} {'queries':>8} {'hist mean':>10} {'min-max':>9}  status"
    lines = [head, "-" * len(head)]
    for name, m in manifests.items():
        if m.get("status") == "skipped":
            lines.append(f"{name:<8} {'-':<6} {'':>6} {'':>8} {'':>10} {'':>9}  skipped: {m.get('reason', '')}")
            continue
        for split in ("train", "dev", "test"):
            c = m["counts"][split]
            span = f"{c['history_min']}-{c['history_max']}"
            lines.append(f"{name:<8} {split:<6} {c['users']:>6} {c['queries']:>8} {c['history_mean']:>10.1f} "
                         f"{span:>9}  {m.get('status', '') if split == 'train' else ''}".rstrip())
    return "\n".join(lines)


def _say(progress: bool, message: str) -> None:
    if progress:
        tqdm.write(message, file=sys.stderr)
