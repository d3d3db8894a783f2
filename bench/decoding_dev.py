"""Choose issue #27's decoding weights on **dev** users (never test users), on the protocol's dev-chosen bases and
adapters (content-addressed under ``--workdir``: nothing is trained where ``bench/protocol_dev.py`` ran):

- ``contrast_alpha`` of contrastive personal decoding (``oppu-cd-k0``) on the generation tasks, against
  ``oppu-k0`` (the same adapters decoded plainly), then its plausibility threshold ``contrast_beta`` at that alpha;
- ``prior_weight`` of the calibrated user prior (``prior-np-k0``, label-scored answers) on the classification
  tasks, against ``np-k0`` with label-scored answers, then its ``prior_smoothing`` at that weight.

One value per option for every task: the grid value with the best mean gain over the tasks' references (in each
task's first metric, signed so that higher is better); ties go to the current default when it is among them (no
change without a dev gain), else to the smallest value. Writes
``bench/results/decoding_dev.json`` (every row, the choices, machine, seconds); the chosen values become the
defaults of :class:`oppu_hub.decoding_config.DecodingOptions` by hand, citing that file.

    .venv/bin/python bench/decoding_dev.py --data_dir runs/eval/data --workdir runs/eval
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oppu_hub.cli import ConfigParser
from oppu_hub.evaluation import machine
from oppu_hub.io import write_json
from oppu_hub.pipeline import Pipeline
from oppu_hub.pipeline_config import PipelineConfig
from oppu_hub.tasks import get_task


@dataclass
class DecodingSelection:
    """What to choose. Args: contrast_tasks / alphas / betas: generation tasks and the ``contrast_alpha`` and
    ``contrast_beta`` grids; prior_tasks / weights / smoothings: classification tasks and the ``prior_weight`` and
    ``prior_smoothing`` grids; out: the JSON written."""

    contrast_tasks: list[str] = field(default_factory=lambda: ["LaMP-4", "LaMP-7"],
                                      metadata={"help": "generation tasks for contrast_alpha"})
    alphas: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 1.0],
                                metadata={"help": "contrast_alpha grid"})
    prior_tasks: list[str] = field(default_factory=lambda: ["LaMP-2N"],
                                   metadata={"help": "classification tasks for prior_weight"})
    weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0],
                                 metadata={"help": "prior_weight grid"})
    betas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3],
                               metadata={"help": "contrast_beta grid (at the chosen alpha)"})
    smoothings: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0],
                                    metadata={"help": "prior_smoothing grid (at the chosen weight)"})
    out: str = field(default="bench/results/decoding_dev.json", metadata={"help": "the JSON written"})


@dataclass(frozen=True)
class Option:
    """One decoding weight: the config field, the method it drives, the method it is read against, and the
    answers both are decoded with."""

    name: str
    method: str
    reference: str
    answers: str


CONTRAST = Option("contrast_alpha", "oppu-cd-k0", "oppu-k0", "generate")
CONTRAST_BETA = Option("contrast_beta", "oppu-cd-k0", "oppu-k0", "generate")
PRIOR = Option("prior_weight", "prior-np-k0", "np-k0", "labels")
PRIOR_SMOOTHING = Option("prior_smoothing", "prior-np-k0", "np-k0", "labels")


def signed(task: str, scores: dict[str, float]) -> float:
    """The task's first metric, signed so that higher is better."""
    t = get_task(task)
    value = scores[t.metric_names[0]]
    return value if t.higher_is_better else -value


def sweep(config: PipelineConfig, option: Option, tasks: list[str], grid: list[float], out: Path,
          references: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The reference and every grid value of ``option`` on each task's dev users, and the value chosen. The
    reference reads none of the options, so its row is run once per task and kept in ``references``."""
    rows: list[dict[str, Any]] = []
    for task in tasks:
        cfg = dataclasses.replace(config, answers=option.answers)
        name = get_task(task).name
        if name not in references:
            start = time.perf_counter()
            [row] = Pipeline(cfg, name).run([option.reference], out / name / "reference")
            references[name] = {"method": option.reference, "scores": row["scores"],
                                "seconds": round(time.perf_counter() - start, 1)}
            print(f"{name} {option.reference}: {row['scores']}", flush=True)
        ref = references[name]
        rows.append({"task": name, option.name: None, **ref})
        for value in grid:
            start = time.perf_counter()
            [row] = Pipeline(dataclasses.replace(cfg, **{option.name: value}), name).run(
                [option.method], out / name / f"{option.name}-{value:g}")
            gain = signed(name, row["scores"]) - signed(name, ref["scores"])
            rows.append({"task": name, option.name: value, "method": option.method, "scores": row["scores"],
                         "gain": round(gain, 4), "seconds": round(time.perf_counter() - start, 1)})
            print(f"{name} {option.method} {option.name}={value:g}: {row['scores']} (gain {gain:+.4f})", flush=True)
    mean_gain = {v: sum(r["gain"] for r in rows if r[option.name] == v) / len(tasks) for v in grid}
    best = max(mean_gain.values())
    incumbent = getattr(config, option.name)
    chosen = incumbent if mean_gain.get(incumbent) == best else min(v for v in grid if mean_gain[v] == best)
    return {"option": option.name, "method": option.method, "reference": option.reference,
            "answers": option.answers, "tasks": tasks, "grid": grid, "rows": rows,
            "mean_gain": {f"{v:g}": round(g, 4) for v, g in mean_gain.items()}, "chosen": chosen,
            "chosen_mean_gain": round(mean_gain[chosen], 4)}


def main() -> None:
    config, selection = ConfigParser([PipelineConfig, DecodingSelection]).parse_args_into_dataclasses()
    config.split = "dev"  # never choose on test users
    config.users = 0  # every dev user
    out = Path(config.workdir) / "decoding_dev"
    start = time.perf_counter()
    result: dict[str, Any] = {"split": "dev", "config": dataclasses.asdict(config)}
    stages = ((selection.contrast_tasks, (CONTRAST, selection.alphas), (CONTRAST_BETA, selection.betas)),
              (selection.prior_tasks, (PRIOR, selection.weights), (PRIOR_SMOOTHING, selection.smoothings)))
    for tasks, *options in stages:
        if not tasks:
            continue
        on, references = config, {}
        for option, grid in options:  # each option at the ones chosen before it, against the same reference rows
            result[option.name] = sweep(on, option, tasks, grid, out, references)
            on = dataclasses.replace(on, **{option.name: result[option.name]["chosen"]})
            print(f"{option.name}: {result[option.name]['chosen']:g} "
                  f"(mean dev gain {result[option.name]['chosen_mean_gain']:+.4f})", flush=True)
    result.update(machine=machine(), wall_seconds=round(time.perf_counter() - start, 1))
    write_json(Path(selection.out), result)


if __name__ == "__main__":
    main()
