"""Leaderboard evaluation (``oppu-hub eval``): the paper's Table 2 methods on the test users of LaMP tasks.

Every method is a name ``{family}-k{k}``:

=============  ====================================================  =====================================
family         what it is                                            base / adapters
=============  ====================================================  =====================================
``np``         non-personalized, no history (``np-k0``)              base task-adapted with k=0
``random``     ``k`` random history items of *other* users           base with k
``rag``        ``k`` BM25-retrieved items of the user's history      base with k
``pag``        the user's textual profile (+ ``k`` retrieved items)  base with k + profile
``oppu``       RAG+OPPU: the user's adapter, trained with ``k``      base with k, adapters trained with k
``pag-oppu``   PAG+OPPU: adapter trained with profile and ``k``      base with k + profile, same adapters
=============  ====================================================  =====================================

Trained artifacts are content-addressed: a base lives in ``{workdir}/base/{hash}/{task}/{variant}`` and adapters in
``{workdir}/users/{hash}/{task}/...``, where the hash covers the training configuration and the training data, so
a second run with the same settings trains nothing and a changed setting never reuses a stale model. Predictions
are written in LaMP's official format (with a matching ``golds.json``) and the printed scores are computed from
those files.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import LampSplit, load_task_split, read_predictions, write_predictions, write_split
from .io import read_json, write_json
from .metrics import score
from .models import DEFAULT_BASE
from .tasks import TASKS, Task, get_task

logger = logging.getLogger(__name__)

# (family, column group, needs retrieval?, profile?, adapters?) in the paper's column order.
FAMILIES = {
    "np": "Non-Personalized",
    "random": "Non-Personalized",
    "rag": "RAG",
    "pag": "PAG",
    "oppu": "RAG+OPPU",
    "pag-oppu": "PAG+OPPU",
}
GROUP_ORDER = ("Non-Personalized", "RAG", "PAG", "RAG+OPPU", "PAG+OPPU")
TABLE2_METHODS = ("np-k0", "random-k1", "rag-k1", "rag-k2", "rag-k4", "pag-k0", "pag-k1",
                  "oppu-k0", "oppu-k1", "oppu-k2", "oppu-k4", "pag-oppu-k0", "pag-oppu-k1")
SMALL_METHODS = ("np-k0", "random-k1", "rag-k1", "oppu-k0", "oppu-k1")
_METHOD = re.compile(r"(np|random|rag|pag-oppu|pag|oppu)-k(\d+)")


@dataclass(frozen=True)
class Method:
    """One column of the leaderboard (see the module docstring for the names)."""

    family: str
    k: int

    @property
    def name(self) -> str:
        return f"{self.family}-k{self.k}"

    @property
    def group(self) -> str:
        return FAMILIES[self.family]

    @property
    def label(self) -> str:
        return f"random k={self.k}" if self.family == "random" else f"k={self.k}"

    @property
    def profile(self) -> bool:
        return self.family in ("pag", "pag-oppu")

    @property
    def oppu(self) -> bool:
        return self.family in ("oppu", "pag-oppu")

    @property
    def random_history(self) -> bool:
        return self.family == "random"

    def sort_key(self) -> tuple[int, int, int]:
        return GROUP_ORDER.index(self.group), int(self.family == "random"), self.k


def parse_method(name: str | Method) -> Method:
    """``"rag-k2"`` -> ``Method("rag", 2)``; raises ``ValueError`` naming the known forms."""
    if isinstance(name, Method):
        return name
    match = _METHOD.fullmatch(str(name).strip().lower())
    if match is None:
        raise ValueError(f"unknown method {name!r}; expected FAMILY-kN with FAMILY one of {', '.join(FAMILIES)} "
                         f"(e.g. {', '.join(SMALL_METHODS)})")
    method = Method(match.group(1), int(match.group(2)))
    if method.family == "np" and method.k != 0:
        raise ValueError(f"{name!r}: the non-personalized method has no history (use np-k0, rag-kN or random-kN)")
    if method.family == "random" and method.k == 0:
        raise ValueError(f"{name!r}: random history needs k >= 1")
    return method


@dataclass
class PipelineConfig:
    """How bases and adapters are trained and methods predicted (shared by ``eval`` and ``analyze``).

    Args:
        data_dir: LaMP-format data (``{data_dir}/{task}/{split}_questions.json``): rebuilt or official files.
        split: the split whose users are evaluated (``test``; ``dev`` for official LaMP, whose test golds are
            hidden).
        workdir: where bases, adapters, profiles, data views and predictions go (reused across runs).
        base_model: the pretrained base (and the LM that writes profiles).
        users: evaluated users per task (the first N of the split; 0 or none: all).
        train_users: training users used for task adaptation (the first N; none: all).
        base_examples / base_epochs / base_lr: task adaptation size and schedule.
        max_history / user_epochs / user_lr: per-user adapter training.
        peft_type: LORA, IA3 or PROMPT_TUNING for the user adapters.
        profile_items / profile_tokens: history items shown to the profile writer and profile length.
    """

    data_dir: str = field(default="data", metadata={"help": "LaMP-format data folder"})
    split: str = field(default="test", metadata={"help": "evaluated split: test | dev"})
    workdir: str = field(default="runs/eval", metadata={"help": "bases, adapters, profiles, predictions"})
    base_model: str = field(default=DEFAULT_BASE, metadata={"help": "pretrained base (also writes profiles)"})
    users: int | None = field(default=3, metadata={"help": "evaluated users per task (first N; 0 = all)"})
    train_users: int | None = field(default=None, metadata={"help": "training users for task adaptation"})
    base_examples: int | None = field(default=64, metadata={"help": "task-adaptation examples (cap)"})
    base_epochs: float = field(default=1.0, metadata={"help": "task-adaptation epochs"})
    base_lr: float = field(default=5e-4, metadata={"help": "task-adaptation learning rate"})
    max_history: int | None = field(default=16, metadata={"help": "most recent history items per adapter"})
    user_epochs: float = field(default=2.0, metadata={"help": "user-adapter epochs"})
    user_lr: float = field(default=1e-3, metadata={"help": "user-adapter learning rate"})
    peft_type: str = field(default="LORA", metadata={"help": "LORA | IA3 | PROMPT_TUNING"})
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"],
                                      metadata={"help": "modules LoRA/IA3 adapt"})
    batch_size: int = field(default=4, metadata={"help": "training batch size"})
    predict_batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    max_prompt_length: int = field(default=384, metadata={"help": "token budget of one prompt"})
    profile_items: int = field(default=8, metadata={"help": "history items shown to the profile writer"})
    profile_tokens: int = field(default=80, metadata={"help": "profile length in tokens"})
    precision: str = field(default="auto", metadata={"help": "auto | bf16 | fp32"})
    seed: int = field(default=42, metadata={"help": "training seed"})


@dataclass
class EvalConfig(PipelineConfig):
    """The leaderboard (``oppu-hub eval``).

    Args:
        tasks: tasks to evaluate (rows of the table).
        methods: methods to run (columns), e.g. ``np-k0 rag-k1 oppu-k1`` (default: the paper's Table 2).
        out_dir: where ``leaderboard.{md,csv,json}`` go (default ``{workdir}/results``).
    """

    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "tasks to evaluate"})
    methods: list[str] = field(default_factory=lambda: list(TABLE2_METHODS),
                               metadata={"help": "methods (columns): np-k0 random-k1 rag-kN pag-kN oppu-kN "
                                                 "pag-oppu-kN"})
    out_dir: str | None = field(default=None, metadata={"help": "table folder (default {workdir}/results)"})


def config_hash(obj: Any, n: int = 12) -> str:
    """A short stable hash of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def file_hash(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


HistoryFilter = Callable[[LampSplit], LampSplit]


class Pipeline:
    """Train-or-reuse and predict for one task.

    Args:
        config: the pipeline settings.
        task: the task.
        history_filter: optionally rewrites the evaluated split's histories (e.g. keep only least relevant
            items); ``history_tag`` names it, so adapters trained on filtered histories get their own folder.
        on_train: called with ``("base"|"users", folder)`` whenever something is actually trained.
    """

    def __init__(self, config: PipelineConfig, task: str | Task, history_filter: HistoryFilter | None = None,
                 history_tag: str = "", on_train: Callable[[str, Path], None] | None = None) -> None:
        self.config = config
        self.task = get_task(task)
        self.work = Path(config.workdir)
        self.history_filter = history_filter
        self.history_tag = history_tag
        self.on_train = on_train
        self._view: Path | None = None
        self._eval_split: LampSplit | None = None
        self._bases: dict[tuple[int, bool], Path] = {}

    # --- data ------------------------------------------------------------------------------------------
    def source_files(self, split: str) -> tuple[Path, Path]:
        folder = Path(self.config.data_dir) / self.task.name
        return folder / f"{split}_questions.json", folder / f"{split}_outputs.json"

    def data_view(self) -> Path:
        """A data folder with the (capped) training users and the (filtered) evaluated split, written once under
        a name derived from its inputs."""
        if self._view is not None:
            return self._view
        c = self.config
        key = config_hash({"train": file_hash(*self.source_files("train")), "eval": file_hash(*self.source_files(
            c.split)), "train_users": c.train_users, "split": c.split, "history": self.history_tag})
        view = self.work / "views" / self.task.name / key
        if not (view / self.task.name / f"{c.split}_outputs.json").exists():  # the last file written
            train = load_task_split(c.data_dir, self.task, "train")
            if c.train_users:
                keep = set(train.user_ids[:c.train_users])
                train = LampSplit(self.task, [q for q in train.questions if q.user_id in keep])
            evaluated = load_task_split(c.data_dir, self.task, c.split)
            if not evaluated.has_golds:
                raise ValueError(f"{evaluated.source}: no gold outputs to score against (official LaMP test golds "
                                 f"are hidden: evaluate --split dev)")
            if self.history_filter is not None:
                evaluated = self.history_filter(evaluated)
            write_split(train, view / self.task.name, "train")
            write_split(evaluated, view / self.task.name, c.split)
        self._view = view
        return view

    def eval_split(self) -> LampSplit:
        if self._eval_split is None:
            self._eval_split = load_task_split(self.data_view(), self.task, self.config.split)
        return self._eval_split

    def users(self) -> list[str]:
        return self.eval_split().select_users(None, self.config.users or None)

    # --- profiles --------------------------------------------------------------------------------------
    def profiles_dir(self) -> Path:
        c = self.config
        return self.work / "profiles" / config_hash({"model": c.base_model, "items": c.profile_items,
                                                     "tokens": c.profile_tokens})

    def ensure_profiles(self) -> None:
        """Profiles of the training users (for the PAG base) and of the evaluated users (cached)."""
        from .profiles import ProfileConfig, generate_profiles

        c = self.config
        train = load_task_split(self.data_view(), self.task, "train")
        evaluated = self.eval_split()
        users = [(u, train.user_history(u)) for u in train.user_ids]
        users += [(u, evaluated.user_history(u)) for u in self.users()]
        generate_profiles(ProfileConfig(task=self.task.name, model=c.base_model, profiles_dir=str(self.profiles_dir()),
                                        num_items=c.profile_items, max_new_tokens=c.profile_tokens), users)

    def _profiles_hash(self, users: Sequence[str]) -> str:
        from .profiles import ProfileStore

        store = ProfileStore(self.profiles_dir(), self.task)
        return config_hash([store.get(u) for u in users])

    # --- training --------------------------------------------------------------------------------------
    def _training(self) -> dict[str, Any]:
        c = self.config
        return dict(task=self.task.name, data_dir=str(self.data_view()), max_prompt_length=c.max_prompt_length,
                    precision=c.precision, seed=c.seed, per_device_train_batch_size=c.batch_size,
                    target_modules=list(c.target_modules), profiles_dir=str(self.profiles_dir()))

    def base_dir(self, k: int, profile: bool = False) -> Path:
        """The task-adapted base for prompts with ``k`` items (and profile): reused when its hash exists."""
        if (k, profile) in self._bases:
            return self._bases[(k, profile)]
        from trainers import BaseTaskConfig, train_base

        c = self.config
        cfg = BaseTaskConfig(**self._training(), k=k, profile=profile, base_model=c.base_model,
                             max_examples=c.base_examples, num_train_epochs=c.base_epochs, learning_rate=c.base_lr)
        view = self.data_view() / self.task.name
        train_users = load_task_split(self.data_view(), self.task, "train").user_ids
        hashed = {**_hashable(cfg), "train_data": file_hash(view / "train_questions.json", view / "train_outputs.json"),
                  "profiles": self._profiles_hash(train_users) if profile else None}
        root = self.work / "base" / config_hash(hashed)
        cfg.output_dir = str(root)
        target = cfg.target_dir()
        if not (target / "oppu_base.json").exists():
            logger.info("training base %s", target)
            write_json(root / "eval_config.json", hashed)
            train_base(cfg)
            if self.on_train:
                self.on_train("base", target)
        self._bases[(k, profile)] = target
        return target

    def adapters_dir(self, k: int, profile: bool = False, peft_type: str | None = None,
                     history_format: str = "full") -> Path:
        """The evaluated users' adapters trained with ``k`` (and profile) on the matching base; users whose
        adapter exists are skipped, so only missing ones are trained."""
        from trainers import UserAdapterConfig, train_users

        c = self.config
        base = self.base_dir(k, profile)
        cfg = UserAdapterConfig(**self._training(), k=k, profile=profile, base_dir=str(base), split=c.split,
                                users=self.users(), max_history=c.max_history, num_train_epochs=c.user_epochs,
                                learning_rate=c.user_lr, peft_type=peft_type or c.peft_type,
                                history_format=history_format)
        hashed = {**_hashable(cfg), "base": base.parent.parent.name, "history": self.history_tag,
                  "eval_data": file_hash(*self.source_files(c.split))}
        root = self.work / "users" / config_hash(hashed)
        cfg.output_dir = str(root)
        out = cfg.adapters_dir()
        from .adapters import is_complete
        from .io import safe_name

        if all(is_complete(out / safe_name(u)) for u in cfg.users):
            return out
        write_json(root / "eval_config.json", hashed)
        report = train_users(cfg)
        if report.failed:
            raise RuntimeError(f"{self.task.name}: adapters failed for {report.failed}")
        timings_path = out / "timings.json"
        timings = read_json(timings_path) if timings_path.exists() else {}
        timings.update({u: report.seconds[u] for u in report.trained + report.updated})
        write_json(timings_path, timings)
        if self.on_train and (report.trained or report.updated):
            self.on_train("users", out)
        return out

    # --- prediction ------------------------------------------------------------------------------------
    def run(self, methods: Sequence[str | Method], out_dir: str | Path, *, peft_type: str | None = None,
            history_format: str = "full", name_suffix: str = "") -> list[dict[str, Any]]:
        """Train what is missing, predict every method on the evaluated users, write LaMP-format predictions
        (``{out_dir}/{task}/{method}.json``) and ``golds.json``; returns one row per method with the scores
        recomputed from the written file."""
        from .inference import Generator, PredictConfig, predict
        from .models import BaseModelConfig, load_base

        methods = [parse_method(m) for m in methods]
        if any(m.profile for m in methods):
            self.ensure_profiles()
        plan = []
        for m in methods:
            base = self.base_dir(m.k, m.profile)
            adapters = self.adapters_dir(m.k, m.profile, peft_type, history_format) if m.oppu else None
            plan.append((m, base, adapters))
        users = self.users()
        split = self.eval_split()
        folder = Path(out_dir) / self.task.name
        golds = {q.id: q.gold for u in users for q in split.user_questions(u)}
        write_predictions(self.task, golds, folder / "golds.json")
        rows = []
        generators: dict[tuple[Path, Path | None], Any] = {}
        for m, base, adapters in sorted(plan, key=lambda p: (str(p[1]), str(p[2]))):
            key = (base, adapters)
            if key not in generators:
                generators.clear()  # one model in memory at a time
                generators[key] = Generator(*load_base(BaseModelConfig(str(base))))
            path = folder / f"{m.name}{name_suffix}.json"
            start = time.perf_counter()
            predict(PredictConfig(task=self.task.name, data_dir=str(self.data_view()), split=self.config.split,
                                  base_dir=str(base), adapters_dir=str(adapters) if adapters else None, k=m.k,
                                  profile=m.profile, profiles_dir=str(self.profiles_dir()),
                                  random_history=m.random_history, users=users, output=str(path),
                                  batch_size=self.config.predict_batch_size,
                                  max_prompt_length=self.config.max_prompt_length), generators[key])
            predictions = read_predictions(path)
            rows.append({"task": self.task.name, "method": m.name + name_suffix,
                         "scores": score(self.task, predictions, golds), "predictions": str(path),
                         "golds": str(folder / "golds.json"), "base": str(base),
                         "adapters": str(adapters) if adapters else None,
                         "predict_seconds": round(time.perf_counter() - start, 2)})
        generators.clear()
        order = {m.name + name_suffix: i for i, m in enumerate(methods)}
        return sorted(rows, key=lambda r: order[r["method"]])


_UNHASHED = {"output_dir", "overwrite", "logging_steps", "data_dir", "profiles_dir", "users", "max_users",
             "push_to_hub", "hub_store", "update", "base_dir"}


def _hashable(cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _UNHASHED}


# --- the table -------------------------------------------------------------------------------------------
def build_table(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Table 2's layout from result rows (``task``, ``method``, ``scores``): one column per method in the paper's
    order, two rows per task (its two metrics), and the best method(s) of each row (lower is better for MAE and
    RMSE)."""
    methods = sorted({parse_method(r["method"]) for r in rows}, key=Method.sort_key)
    by = {(r["task"], r["method"]): r["scores"] for r in rows}
    tasks = sorted({r["task"] for r in rows}, key=lambda t: list(TASKS).index(get_task(t).name))
    table_rows = []
    for name in tasks:
        task = get_task(name)
        for metric in task.metric_names:
            scores = {m.name: by[(name, m.name)][metric] for m in methods if (name, m.name) in by}
            best: list[str] = []
            if scores:
                values = {m: round(v, 4) for m, v in scores.items()}
                target = max(values.values()) if task.higher_is_better else min(values.values())
                best = [m for m, v in values.items() if v == target]
            table_rows.append({"task": name, "metric": metric, "higher_is_better": task.higher_is_better,
                               "scores": scores, "best": best})
    columns = [{"method": m.name, "group": m.group, "label": m.label} for m in methods]
    return {"columns": columns, "rows": table_rows}


def _header(col: dict[str, str]) -> str:
    return f"{col['group']} {col['label']}"


def format_markdown(table: dict[str, Any]) -> str:
    """The table in Markdown: best per row in bold; ↑/↓ says which way is better."""
    cols = table["columns"]
    lines = ["| task | metric | " + " | ".join(_header(c) for c in cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for row in table["rows"]:
        cells = []
        for c in cols:
            v = row["scores"].get(c["method"])
            text = "–" if v is None else f"{v:.3f}"
            cells.append(f"**{text}**" if c["method"] in row["best"] else text)
        arrow = "↑" if row["higher_is_better"] else "↓"
        lines.append(f"| {row['task']} | {row['metric']} {arrow} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_csv(table: dict[str, Any]) -> str:
    """The table as CSV: task, metric, higher_is_better, one column per method, and ``best``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "metric", "higher_is_better", *(c["method"] for c in table["columns"]), "best"])
    for row in table["rows"]:
        writer.writerow([row["task"], row["metric"], row["higher_is_better"],
                         *(f"{row['scores'][c['method']]:.6f}" if c["method"] in row["scores"] else ""
                           for c in table["columns"]), " ".join(row["best"])])
    return buf.getvalue()


def write_table(table: dict[str, Any], out_dir: str | Path, stem: str = "leaderboard",
                meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``{stem}.md``, ``{stem}.csv`` and ``{stem}.json`` (the table plus ``meta``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
    paths["md"].write_text(format_markdown(table) + "\n", encoding="utf-8")
    paths["csv"].write_text(format_csv(table), encoding="utf-8")
    write_json(paths["json"], {**table, "meta": meta or {}})
    return paths


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}"


def run_eval(config: EvalConfig) -> tuple[dict[str, Any], dict[str, Path], list[dict[str, Any]]]:
    """Run the configured methods on every task; returns ``(table, written paths, result rows)``."""
    methods = [parse_method(m) for m in config.methods]
    tasks = [get_task(t) for t in config.tasks]
    out = Path(config.out_dir or Path(config.workdir) / "results")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for task in tasks:
        task_start = time.perf_counter()
        rows += Pipeline(config, task).run(methods, out / "predictions")
        print(f"{task.name}: {len(methods)} methods in {time.perf_counter() - task_start:.0f} s", flush=True)
    table = build_table(rows)
    meta = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "wall_seconds": round(time.perf_counter() - start, 1), "config": dataclasses.asdict(config),
            "results": rows}
    return table, write_table(table, out, meta=meta), rows


def rescore(predictions: str | Path, golds: str | Path, task: str | Task) -> dict[str, float]:
    """Score a written prediction file against a written golds file (what LaMP's official script does)."""
    return score(task, read_predictions(predictions), read_predictions(golds))


__all__ = ["EvalConfig", "Method", "Pipeline", "PipelineConfig", "build_table", "format_csv",
           "format_markdown", "parse_method", "rescore", "run_eval", "write_table"]
