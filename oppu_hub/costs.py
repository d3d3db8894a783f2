"""What a leaderboard's trained methods cost (``oppu-hub analyze method-costs``), read from the artifacts its result
rows name (``leaderboard.json``: each method's base and adapters folders under the eval's workdir), so it runs on
the machine that has them; nothing is trained or predicted.

Per task and method with adapters:

* the **shared stage**, trained once for all users: the pooled adapter (``pooled-kN``) or the collective LoRA merged
  into a new base (``two-stage*-kN``): its training examples, seconds and the bytes it adds (the pooled adapter's
  weights; a merged base is a whole model copy);
* the **per-user stage**: users, history items each and adapter bytes each (means), the wall seconds of the runs
  that trained them (recorded since 2026-12-05; earlier adapters have none) and each user's own seconds (mean):
  users trained side by side (``--concurrent``) each record the wall time of their slot, so these overlap and sum
  to more than the runs took.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from statistics import mean
from typing import Any

from trainers.base import read_base_record

from .adapters import AdapterRecord
from .analyses_config import LeaderboardAnalysisConfig
from .io import read_json, safe_name
from .methods import parse_method
from .report import figure, write_result
from .tasks import get_task

WEIGHTS = ("adapter_model.safetensors", "model.safetensors")


def _bytes(folder: Path) -> int:
    return sum((folder / name).stat().st_size for name in WEIGHTS if (folder / name).is_file())


def _timings(folder: Path) -> dict[str, float]:
    path = folder / "timings.json"
    return read_json(path) if path.is_file() else {}


def method_cost(method: str, base: Path, adapters: Path, users: Iterable[str]) -> dict[str, Any]:
    """One method's shared and per-user costs (see the module docstring) for the evaluated ``users``; ``None``
    where it has no such stage or the artifact did not record it (adapters trained before their seconds were
    kept). The runs' wall time covers every user they trained (a later run may have added users)."""
    m = parse_method(method)
    cost: dict[str, Any] = dict.fromkeys(["shared_examples", "shared_seconds", "shared_bytes", "users",
                                          "items_per_user", "users_seconds", "seconds_per_user", "bytes_per_user"])
    if m.pooled:
        record = AdapterRecord.from_folder(adapters)
        cost.update(shared_examples=record.num_history_items, shared_bytes=_bytes(adapters),
                    shared_seconds=_timings(adapters.parent).get(adapters.name))
        return cost
    if m.collective:
        stage = read_base_record(base)["collective"]
        cost.update(shared_examples=stage["num_examples"], shared_seconds=stage.get("train_seconds"),
                    shared_bytes=_bytes(base))
    folders = [adapters / safe_name(u) for u in dict.fromkeys(users)]
    timings = _timings(adapters)
    seconds = [timings[p.name] for p in folders if p.name in timings]
    runs = adapters / "train_runs.json"
    cost.update(users=len(folders),
                users_seconds=sum(r["seconds"] for r in read_json(runs)) if runs.is_file() else None,
                items_per_user=mean(AdapterRecord.from_folder(p).num_history_items for p in folders),
                seconds_per_user=mean(seconds) if len(seconds) == len(folders) else None,
                bytes_per_user=mean(_bytes(p) for p in folders))
    return cost


def method_costs(config: LeaderboardAnalysisConfig) -> dict[str, Any]:
    """The costs of every trained method of ``config.leaderboard``'s tasks whose artifacts this machine has."""
    header = ["task", "method", "shared examples", "shared s", "shared MB", "users", "items per user",
              "users' runs s", "s per user (slot)", "adapter KB per user"]
    path = Path(config.leaderboard) / "leaderboard.json"
    if not path.is_file():
        raise ValueError(f"{config.leaderboard}: no leaderboard.json (run oppu-hub eval)")
    tasks = {get_task(t).name for t in config.tasks}
    rows, missing = [], []
    for result in read_json(path)["meta"]["results"]:
        if result["task"] not in tasks or not result.get("adapters"):
            continue
        base, adapters = Path(result["base"]), Path(result["adapters"])
        if not adapters.exists():
            missing.append(f"{result['task']} {result['method']}")
            continue
        c = method_cost(result["method"], base, adapters, read_json(result["query_users"]).values())
        rows.append([result["task"], result["method"], c["shared_examples"], c["shared_seconds"],
                     None if c["shared_bytes"] is None else round(c["shared_bytes"] / 1e6, 1), c["users"],
                     *(None if c[k] is None else round(c[k], 1)
                       for k in ("items_per_user", "users_seconds", "seconds_per_user")),
                     None if c["bytes_per_user"] is None else round(c["bytes_per_user"] / 1e3, 1)])
    if not rows:
        raise ValueError(f"{config.leaderboard}: none of its adapters is on this machine"
                         + (f" ({', '.join(missing)})" if missing else ""))
    fig, axes = figure(1, width=max(6.0, 0.6 * len(rows)))
    ax = axes[0]
    shared = [r[3] or 0.0 for r in rows]
    users = [r[7] or 0.0 for r in rows]
    ax.bar(range(len(rows)), shared, label="shared stage")
    ax.bar(range(len(rows)), users, bottom=shared, label="per-user stage (its runs' wall time)")
    ax.set_xticks(range(len(rows)), [f"{r[0]}\n{r[1]}" + ("" if r[7] is not None or r[5] is None else
                                                          "\n(users: not recorded)") for r in rows],
                  fontsize=6, rotation=90)
    ax.set_ylabel("training seconds")
    ax.set_title("What each method's training cost", fontsize=9)
    ax.legend(fontsize=7)
    return write_result(config, "method-costs", header, rows, fig, extra={"not_on_this_machine": missing})


__all__ = ["method_cost", "method_costs"]
