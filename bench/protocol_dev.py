"""Choose the protocol's per-task settings on **dev** users (never test users) and record them
(:mod:`oppu_hub.protocol`; docs/tuning.md).

1. **Base epochs.** The base is task-adapted on every training user's examples (the protocol's cap, batch and
   learning rate) for 1, 2, ... epochs, ``np-k0`` scored on all dev users after each; the curve stops where the
   score stops improving (:func:`oppu_hub.protocol.choose_epochs`), at most ``BASE_MAX_EPOCHS``.
2. **User adapters**, on that base, at the protocol's history cap: ``oppu-k0`` for each learning rate at the
   task's current epochs, then the other epochs at the best rate; the setting chosen as ``tune_users`` chooses
   (:func:`tune_users.choose`: the cheapest within one dev query of the best).

Every run is a full eval-pipeline run on the dev split (content-addressed: an interrupted selection resumes and the
chosen base is the very folder the leaderboard later uses). Writes ``bench/results/protocol_dev-{task}.json``
(curve, sweep, choice, machine, seconds) and the choice into ``oppu_hub/protocol.json``. A task whose JSON already
holds a choice of the same training settings and data, whatever grid it swept, is not chosen again (``--redo``
does): a fresh clone goes straight to the leaderboard. Each finished step (a curve epoch, a user setting) is also kept
in ``protocol_dev-{task}.partial.json`` until the choice is made, so a run cut short (a GPU session's time limit)
resumes on any machine from its returned files without redoing those steps.

    .venv/bin/python bench/protocol_dev.py --tasks LaMP-2N --data_dir runs/eval/data --workdir runs/eval

Tasks with fewer than ``MIN_DEV_USERS`` dev users are skipped, saying so: they take the fallback task's choices.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_users import TARGETS, choose, run_setting

from oppu_hub import protocol
from oppu_hub.cli import ConfigParser
from oppu_hub.evaluation import machine
from oppu_hub.io import read_json, write_json
from oppu_hub.pipeline import Pipeline, without_unset
from oppu_hub.pipeline_config import PipelineConfig
from oppu_hub.tasks import get_task
from oppu_hub.tuned import user_defaults


@dataclass
class SelectionConfig:
    """What to choose. Args: tasks; max_epochs: the longest base curve; lrs / user_epochs: the user sweep;
    out: where the JSONs go; record: write the choice into oppu_hub/protocol.json."""

    tasks: list[str] = field(default_factory=lambda: ["LaMP-2N"], metadata={"help": "tasks to choose for"})
    max_epochs: int = field(default=protocol.BASE_MAX_EPOCHS, metadata={"help": "longest base curve (epochs)"})
    lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3],
                             metadata={"help": "user learning rates"})
    user_epochs: list[float] = field(default_factory=lambda: [1.0, 2.0], metadata={"help": "user epochs"})
    out: str = field(default="bench/results", metadata={"help": "folder of protocol_dev-{task}.json"})
    record: bool = field(default=True, metadata={"help": "record the choice in oppu_hub/protocol.json"})
    redo: bool = field(default=False, metadata={"help": "choose again though protocol_dev-{task}.json holds a "
                                                        "choice of the same settings and data"})


def metric_of(task: str, row: dict[str, Any]) -> float:
    return row["scores"][get_task(task).metric_names[0]]


@dataclass
class Progress:
    """The finished steps of a choice not yet made: curve epochs and user settings (each with the machine that ran
    it), kept at ``path`` for the same training settings and data (``key``) and reused instead of re-run."""

    path: Path
    key: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, key: dict[str, Any]) -> Progress:
        earlier = read_json(path) if path.exists() else {}
        if earlier.get("key") != key:
            return cls(path, key)
        return cls(path, key, earlier["curve"], earlier["users"])

    def add(self, steps: list[dict[str, Any]], step: dict[str, Any]) -> dict[str, Any]:
        steps.append({**step, "machine": machine()})
        write_json(self.path, {"key": self.key, "curve": self.curve, "users": self.users})
        return steps[-1]

    def done(self) -> None:
        self.path.unlink(missing_ok=True)


def base_curve(config: PipelineConfig, task: str, max_epochs: int, out: Path, progress: Progress
               ) -> list[dict[str, Any]]:
    """``np-k0`` on dev after 1, 2, ... epochs of task adaptation, until it stops improving."""
    higher = get_task(task).higher_is_better
    curve: list[dict[str, Any]] = []
    for epochs in range(1, max_epochs + 1):
        step = next((s for s in progress.curve if s["epochs"] == epochs), None)
        if step is None:
            cfg = dataclasses.replace(config, base=dataclasses.replace(config.base, num_train_epochs=float(epochs)))
            start = time.perf_counter()
            [row] = Pipeline(cfg, task).run(["np-k0"], out / f"base-{epochs}ep")
            step = progress.add(progress.curve, {"epochs": epochs, "scores": row["scores"], "base": row["base"],
                                                 "seconds": round(time.perf_counter() - start, 1)})
        curve.append(step)
        print(f"{task} base {epochs} ep: {curve[-1]['scores']}", flush=True)
        scores = [metric_of(task, r) for r in curve]
        if protocol.choose_epochs(scores, higher) < epochs:
            break
    return curve


def base_here(config: PipelineConfig, task: str, step: dict[str, Any], out: Path) -> dict[str, Any]:
    """``np-k0`` on dev on the base the user rows of this machine sat on (``config``'s epochs): the curve's step
    when this machine measured it, else measured here (a base trained on another machine, e.g. the GPU's curve
    beside the CPU's rows, is another base, and an adapter's gain is only read against its own base)."""
    if step.get("machine") == machine() and step.get("base"):
        return step
    start = time.perf_counter()
    [row] = Pipeline(config, task).run(["np-k0"], out / f"base-{step['epochs']}ep-here")
    return {"epochs": step["epochs"], "scores": row["scores"], "base": row["base"],
            "seconds": round(time.perf_counter() - start, 1), "machine": machine()}


def user_sweep(config: PipelineConfig, task: str, lrs: list[float], epochs: list[float], out: Path,
               progress: Progress) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """``oppu-k0`` on dev per learning rate at the task's current epochs, then the other epochs at the best rate
    (on the base of ``config``'s epochs); returns the rows, the chosen one and the number of dev queries."""
    tuned = user_defaults(task)
    target = next(name for name, modules in TARGETS.items() if tuple(modules) == tuned.target_modules)
    pipeline = Pipeline(config, task)
    n_queries = sum(len(pipeline.eval_split().user_questions(u)) for u in pipeline.users())
    rows: list[dict[str, Any]] = []

    def run(lr: float, ep: float) -> None:
        if any((r["lr"], r["epochs"]) == (lr, ep) for r in rows):
            return
        setting = {"lr": lr, "epochs": ep, "target": target, "rank": tuned.lora_r}
        on = {**setting, "base_epochs": config.base.num_train_epochs}
        step = next((r for r in progress.users if {k: r.get(k) for k in on} == on), None)
        if step is None:
            step = progress.add(progress.users, {**run_setting(config, task, out, **setting), **on})
        rows.append(step)
        print(f"{task} user lr {lr:g}, {ep:g} ep: {rows[-1]['scores']}", flush=True)

    for lr in lrs:
        run(lr, tuned.num_train_epochs)
    best_lr = choose(task, rows, n_queries)["lr"]
    for ep in epochs:
        run(best_lr, ep)
    return rows, choose(task, rows, n_queries), n_queries


def select(config: PipelineConfig, selection: SelectionConfig, task: str) -> dict[str, Any] | None:
    """Both stages for ``task``; returns the record written to ``protocol_dev-{task}.json`` (``None`` for a task
    with too few dev users, which takes the fallback task's choices)."""
    name = get_task(task).name
    pipeline = Pipeline(config, name)
    dev_users = len(pipeline.users())
    if dev_users < protocol.MIN_DEV_USERS:
        print(f"{name}: {dev_users} dev users, fewer than {protocol.MIN_DEV_USERS}: nothing chosen, it takes "
              f"{protocol.FALLBACK_TASK}'s choices", flush=True)
        return None
    path = Path(selection.out) / f"protocol_dev-{name}.json"
    settings = json.loads(json.dumps(dataclasses.asdict(config)))
    training = {stage: without_unset(settings[stage]) for stage in ("base", "user")}
    if path.exists() and not selection.redo:
        done = read_json(path)
        recorded = done.get("config", {})
        if ({stage: without_unset(recorded.get(stage) or {}) for stage in training} == training
                and done.get("data") == pipeline.source_hashes()):  # the same training and data
            print(f"{name}: chosen already ({path}; --redo chooses again)", flush=True)
            return done
    out = Path(config.workdir) / "protocol_dev" / name
    start = time.perf_counter()
    progress = Progress.load(path.with_suffix(".partial.json"),
                             {**training, "data": pipeline.source_hashes()})
    curve = base_curve(config, name, selection.max_epochs, out, progress)
    higher = get_task(name).higher_is_better
    epochs = protocol.choose_epochs([metric_of(name, r) for r in curve], higher)
    on_base = dataclasses.replace(config, base=dataclasses.replace(config.base, num_train_epochs=float(epochs)))
    rows, best, n_queries = user_sweep(on_base, name, selection.lrs, selection.user_epochs, out, progress)
    here = base_here(on_base, name, next(s for s in curve if s["epochs"] == epochs), out)
    print(f"{name} np-k0 on this machine's {epochs}-epoch base: {here['scores']}; chosen user setting: "
          f"{best['scores']}", flush=True)
    tuned = user_defaults(name)
    user = {"learning_rate": best["lr"], "num_train_epochs": best["epochs"],
            "target_modules": list(tuned.target_modules), "lora_r": best["rank"]}
    result = {"task": name, "split": config.split, "users": dev_users, "n_queries": n_queries,
              "config": settings, "data": pipeline.source_hashes(),
              "grid": {"max_epochs": selection.max_epochs, "lrs": selection.lrs, "user_epochs": selection.user_epochs},
              "base_curve": curve, "base_epochs": epochs, "np_k0_here": here, "user_rows": rows, "user": user,
              "machine": machine(), "wall_seconds": round(time.perf_counter() - start, 1)}
    write_json(path, result)
    progress.done()
    if selection.record:
        protocol.record_choice(name, {"base_epochs": float(epochs), "user": user,
                                      "source": f"bench/results/protocol_dev-{name}.json"})
    return result


def main() -> None:
    config, selection = ConfigParser([PipelineConfig, SelectionConfig]).parse_args_into_dataclasses()
    config.split = "dev"  # never choose on test users
    config.users = 0  # every dev user
    for task in selection.tasks:
        result = select(config, selection, task)
        if result is not None:
                print(f"{result['task']}: base {result['base_epochs']} epochs, user {result['user']} "
                  f"({result['wall_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
