"""Leaderboard evaluation (``oppu-hub eval``): the paper's Table 2 methods (:mod:`oppu_hub.methods`) on the test
users of LaMP tasks.

A task's bases and adapters are trained or reused, and its methods predicted, by the task's
:class:`~oppu_hub.pipeline.Pipeline` (content-addressed artifacts); its result rows are kept in
``{out_dir}/rows/{task}.json`` and reused while the settings, methods, data and artifacts they name are unchanged
(:func:`task_rows`). The printed scores are
computed from the written LaMP-format prediction files, as are the table's paired bootstrap intervals
(:mod:`oppu_hub.stats`) of each method's difference to ``np-k0`` and to the RAG method with the smallest k
(:mod:`oppu_hub.leaderboard`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .data import read_predictions
from .io import read_json, write_json
from .leaderboard import build_table, write_table
from .methods import Method, parse_method
from .metrics import score
from .models import bf16_available
from .pipeline import Pipeline, config_hash, hashable
from .pipeline_config import EvalConfig
from .retrieval import RANDOM_HISTORY_VERSION
from .task_progress import Finished, TaskProgress, adopt, finished_elsewhere
from .tasks import Task, get_task


def machine() -> str:
    """The hardware a table was measured on: CPU model and cores (or the GPU), and whether bf16 was fast there."""
    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    else:
        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                     platform.processor() or platform.machine())
        device = f"{model}, {os.cpu_count()} CPU cores"
    return f"{device}, {platform.system()} {platform.release()}, bf16 {'yes' if bf16_available() else 'no'}"


_TABLE_ONLY = {"tasks", "out_dir", "references", "resamples", "bootstrap_seed", "reuse_only", "rows_from"}
# Decoding weights and the Method property of the methods that read them: rows of methods that do not read a weight
# do not depend on it (choosing the prior's weight on dev leaves a table without a prior column valid).
_READ_BY = {"contrast_alpha": "contrastive", "contrast_beta": "contrastive", "prior_weight": "prior",
            "prior_smoothing": "prior"}


def row_spec(config: EvalConfig, pipeline: Pipeline, methods: Sequence[Method]) -> dict[str, Any]:
    """What a task's rows depend on: the eval settings but the table-only ones and the decoding weights no method
    reads, the training settings that identify the bases and adapters, the methods and the task's data, as JSON
    values."""
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in _TABLE_ONLY and not (k in _READ_BY and not any(getattr(m, _READ_BY[k]) for m in methods))}
    settings.update(base=hashable(config.base), user=hashable(config.user))
    spec = {"config": settings, "methods": [m.name for m in methods], "task": pipeline.task.name,
            "data": pipeline.source_hashes()}
    if any(m.random_history for m in methods):  # only there, so that other tasks' rows stay valid
        spec["random_history_version"] = RANDOM_HISTORY_VERSION
    return json.loads(json.dumps(spec, default=str))  # as the rows file records it (tuples as lists)


def spec_changes(recorded: dict[str, Any], spec: dict[str, Any], prefix: str = "") -> list[str]:
    """``name: recorded -> now`` for each setting where two row specs differ (nested settings dotted)."""
    changes = []
    for name in sorted(set(recorded) | set(spec)):
        was, now = recorded.get(name), spec.get(name)
        if isinstance(was, dict) and isinstance(now, dict):
            changes += spec_changes(was, now, f"{prefix}{name}.")
        elif was != now:
            changes.append(f"{prefix}{name}: {was!r} -> {now!r}")
    return changes


def task_rows(config: EvalConfig, task: Task, methods: Sequence[Method], out: Path
              ) -> tuple[list[dict[str, Any]], float, str] | None:
    """One task's result rows, the seconds computing them took and the :func:`machine` that computed them (tasks of
    one table may come from several machines): reused from ``{out}/rows/{task}.json`` when
    that was written by a finished run with the same :func:`row_spec` and its bases and adapters are
    still the ones these settings name (so a long leaderboard resumes task by task, a final all-task call only
    rebuilds the table, and a changed tuned default re-runs the tasks it touches), else run and recorded (``None``
    with ``config.reuse_only``, saying what changed). A task that runs resumes method by method: the methods that
    an earlier run of it finished, or another table of ``config.rows_from`` computed, under the same per-method
    settings are not run again (:mod:`oppu_hub.task_progress`); its seconds are the sum of its methods'."""
    pipeline = Pipeline(config, task)
    spec = row_spec(config, pipeline, methods)
    key = config_hash(spec)
    path = out / "rows" / f"{task.name}.json"
    if path.exists():
        done = read_json(path)
        if done.get("key") == key and all(_still_valid(pipeline, r) for r in done["rows"]):
            return done["rows"], done.get("seconds", 0.0), done.get("machine", "not recorded")
        if done.get("key") != key:
            why = "; ".join(spec_changes(done["spec"], spec)) if "spec" in done else "made under other settings"
        else:
            why = "the bases or adapters they name are not these settings' (or their prediction files are missing)"
        print(f"{task.name}: the rows in {path} do not stand: {why}", flush=True)
    if config.reuse_only:
        return None
    keys = {m.name: config_hash(row_spec(dataclasses.replace(config, methods=[m.name]), pipeline, [m]))
            for m in methods}  # each method's own: the same in every table that runs it
    progress = TaskProgress.load(out, task.name)
    done = {name: f.row for name, f in progress.matching(keys).items() if _still_valid(pipeline, f.row)}
    for name, f in finished_elsewhere(config.rows_from or (), task.name, keys).items():
        if name not in done and _still_valid(pipeline, f.row):
            progress.add(adopted := adopt(f, out / "predictions" / task.name))
            done[name] = adopted.row
    if done:
        print(f"{task.name}: reusing the finished methods {' '.join(done)}", flush=True)
    rows = pipeline.run(methods, out / "predictions", done=done, on_row=lambda row: progress.add(
        Finished(keys[row["method"]], row, row["seconds"], machine())))
    finished = [progress.methods[r["method"]] for r in rows]
    seconds = round(sum(f.seconds for f in finished), 1)
    machines = "; ".join(dict.fromkeys(f.machine for f in finished if f.seconds)) or machine()
    write_json(path, {"key": key, "spec": spec, "rows": rows, "seconds": seconds, "machine": machines,
                      "method_keys": keys})
    progress.done()
    return rows, seconds, machines


def _still_valid(pipeline: Pipeline, row: dict[str, Any]) -> bool:
    """Whether a recorded result row still stands: its prediction file exists and the base and adapters it
    predicted with are the ones the current settings name (a changed tuned default names other adapters)."""
    base, adapters = pipeline.artifacts(row["method"])
    return (Path(row["predictions"]).exists() and row["base"] == (str(base) if base else None)
            and row["adapters"] == (str(adapters) if adapters else None))


def run_eval(config: EvalConfig) -> tuple[dict[str, Any], dict[str, Path], list[dict[str, Any]]]:
    """Run the configured methods on every task; returns ``(table, written paths, result rows)``. The table is
    rewritten after every finished task, so a long run that stops still leaves the table of what it finished;
    its meta records each task's compute seconds (kept with the task's rows, so a resumed run still reports the
    time the reused rows took) and their sum."""
    methods = [parse_method(m) for m in config.methods]
    names = [m.name for m in methods]
    references = None if config.references is None else [parse_method(r).name for r in config.references]
    if stray := [r for r in references or () if r not in names]:
        raise ValueError(f"reference {stray[0]!r} is not one of the methods run ({' '.join(names)}): add it to "
                         f"--methods")
    tasks = [get_task(t) for t in config.tasks]
    if not tasks:
        raise ValueError("no task to evaluate: give --tasks")
    out = Path(config.out_dir or Path(config.workdir) / "results")
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    machines: dict[str, str] = {}
    table: dict[str, Any] = {}
    paths: dict[str, Path] = {}
    for i, task in enumerate(tasks):
        done = task_rows(config, task, methods, out)
        if done is None:
            print(f"{task.name}: not run (no finished rows for these settings)", flush=True)
        else:
            finished, seconds[task.name], machines[task.name] = done
            rows += finished
            print(f"{task.name}: {len(methods)} methods, {seconds[task.name]:.0f} s of compute", flush=True)
        if done is not None or i == len(tasks) - 1:
            not_run = [t.name for t in tasks[:i + 1] if t.name not in seconds]
            table = {**build_table(rows, references=references, resamples=config.resamples,
                                       seed=config.bootstrap_seed), "not_run": not_run}
            meta = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                    "task_machines": machines, "task_seconds": seconds,
                    "wall_seconds": round(sum(seconds.values()), 1), "config": dataclasses.asdict(config),
                    "results": rows}
            paths = write_table(table, out, meta=meta)
    return table, paths, rows


def rescore(predictions: str | Path, golds: str | Path, task: str | Task) -> dict[str, float]:
    """Score a written prediction file against a written golds file (what LaMP's official script does)."""
    return score(task, read_predictions(predictions), read_predictions(golds))


__all__ = ["machine", "rescore", "row_spec", "run_eval", "spec_changes", "task_rows"]
