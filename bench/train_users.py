"""Users/hour of per-user adapter training at a real workload: the sequential reference vs concurrent training.

    .venv/bin/oppu-hub data build --source_dir ../shared/data --out_dir /tmp/bench-data --tasks LaMP-2N
    .venv/bin/python bench/train_users.py --data_dir /tmp/bench-data --users 8 --history 16 --epochs 2

Every mode trains the same users (the first ``--users`` test users of ``--task`` with at least ``--history`` items) on
the same items (each user's ``--history`` most recent), epochs and hyperparameters (the task's dev-tuned defaults of
:mod:`oppu_hub.tuned`), in one run; ``--sequential_users N`` trains only the first N of them in the one-at-a-time
modes (their time grows linearly with the users, so a GPU run at 64 users need not wait for 64 sequential ones):

* ``reference``: one user at a time, an ``SFTTrainer`` per user (``train-users --concurrent 1``), fp32;
* ``concurrent``: the default (``train-users``: users together in slots, trainers/concurrent.py), fp32;
* ``sequential-bf16`` / ``concurrent-bf16``: the same in bf16 autocast, where the CPU has AVX512-BF16/AMX or on a
  GPU (their "x reference" column compares across dtypes and says so).

Work is the honest model of :mod:`_work` (frozen base: no weight gradients; the LM head only where a loss is
taken), the same count for every mode that trains the same users; "x reference" is the ratio of that work's rate
(GFLOP/s), which is the users/h ratio when both train the same users; "of peak" is against the best torch matmul of
the model's shapes measured in this run for the mode's dtype on the device that trains (CUDA when present). Quality:
each mode's mean final training loss, its score on the users' test queries and how many of its predictions equal
the first mode's (on the users both trained). Prints a table and writes ``bench/results/train_users.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _report import save_report  # noqa: E402
from _work import matmul_peak, model_shape, training_flops  # noqa: E402

from oppu_hub.adapters import AdapterRecord  # noqa: E402
from oppu_hub.data import load_task_split  # noqa: E402
from oppu_hub.inference import PredictConfig, predict  # noqa: E402
from oppu_hub.metrics import score  # noqa: E402
from oppu_hub.models import bf16_available, load_base, model_fingerprint, resolve_base  # noqa: E402
from oppu_hub.prompts import PromptBuilder  # noqa: E402
from oppu_hub.tasks import Task, get_task  # noqa: E402
from oppu_hub.tuned import user_settings  # noqa: E402
from trainers import UserAdapterConfig, train_users  # noqa: E402
from trainers.common import max_length, set_threads  # noqa: E402
from trainers.rows import tokenize_rows  # noqa: E402
from trainers.runs import Workspace  # noqa: E402

MODES = {"reference": dict(precision="fp32", concurrent=1), "concurrent": dict(precision="fp32", concurrent=0),
         "sequential-bf16": dict(precision="bf16", concurrent=1), "concurrent-bf16": dict(precision="bf16",
                                                                                          concurrent=0)}


def workload(data_dir: str, task: Task, base: str, users: int, history: int, epochs: float) -> dict:
    """The ``UserAdapterConfig`` fields every mode shares: the first ``users`` test users of ``task`` with at least
    ``history`` items, their ``history`` latest items, ``epochs`` and the task's dev-tuned adapter settings."""
    split = load_task_split(data_dir, task, "test")
    chosen = [u for u in split.user_ids if len(split.user_history(u)) >= history][:users]
    if len(chosen) < users:
        raise SystemExit(f"{task.name} has {len(chosen)} test users with at least {history} history items, not "
                         f"{users}: ask for fewer users or items")
    return dict(user_settings(task.name, num_train_epochs=epochs), task=task.name, data_dir=data_dir, base_dir=base,
                users=chosen, max_history=history)


def training_rows(config: UserAdapterConfig, model, tokenizer) -> dict[str, list]:
    """The tokenized rows each user trains on: the user's job as the trainers plan it, tokenized as both do."""
    task = get_task(config.task)
    split = load_task_split(config.data_dir, task, "test")
    workspace = Workspace(config, split, model, tokenizer, model_fingerprint(model), None,
                          PromptBuilder(task, tokenizer, config.max_prompt_length))
    return {user: tokenize_rows(workspace.plan(user).rows, tokenizer, max_length(config)) for user in config.users}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/bench-data")
    parser.add_argument("--task", default="LaMP-2N", help="whose test users, items and tuned adapter settings")
    parser.add_argument("--base", default="SmolLM2-135M-Instruct", help="base model folder or the default name")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--sequential_users", type=int, default=None,
                        help="the one-at-a-time modes train only the first N users (default: all)")
    parser.add_argument("--history", type=int, default=16, help="most recent history items per user")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--modes", nargs="+", choices=list(MODES),
                        default=["reference", "concurrent", *(["sequential-bf16", "concurrent-bf16"]
                                                              if bf16_available() else [])])
    parser.add_argument("--out", default=str(REPO / "bench/results/train_users.json"))
    args = parser.parse_args()
    set_threads()
    task = get_task(args.task)
    base = resolve_base(args.base)
    common = workload(args.data_dir, task, base, args.users, args.history, args.epochs)
    split = load_task_split(args.data_dir, task, "test")
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model, tokenizer = load_base(base)
    device = str(model.device)
    template = UserAdapterConfig(**common, output_dir=str(scratch / "plan"))  # nothing trained there
    shape = model_shape(model, template.targets(), template.lora_r)
    rows = training_rows(template, model, tokenizer)
    del model
    peaks = {dtype: matmul_peak({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype], shape, device=device)
             for dtype in dict.fromkeys(MODES[m]["precision"] for m in args.modes)}
    results, first, first_rate, works = [], None, None, {}
    for mode in args.modes:
        sequential = MODES[mode]["concurrent"] == 1
        users = common["users"][:args.sequential_users] if sequential else common["users"]
        if len(users) not in works:
            works[len(users)] = training_flops(shape, [r for u in users for r in rows[u]], args.epochs)
        work = works[len(users)]
        golds = {q.id: q.gold for u in users for q in split.user_questions(u)}
        config = UserAdapterConfig(**{**common, "users": users}, **MODES[mode], output_dir=str(scratch / mode))
        start = time.perf_counter()
        report = train_users(config)
        seconds = time.perf_counter() - start
        assert sorted(report.trained) == sorted(users), report
        losses = [AdapterRecord.from_folder(config.adapters_dir() / u).train_loss for u in users]
        predictions = predict(PredictConfig(task=task.name, data_dir=args.data_dir, base_dir=base, users=users,
                                            adapters_dir=str(config.adapters_dir())))
        first = first or predictions
        shared = [q for q in golds if q in first]
        dtype = MODES[mode]["precision"]
        gflops = work["total"] / seconds / 1e9
        first_rate = first_rate or gflops
        results.append(dict(mode=mode, dtype=dtype, users=len(users), seconds=round(seconds, 1),
                            users_per_hour=round(len(users) * 3600 / seconds, 1),
                            tokens_per_s=round(work["tokens"] / seconds, 1), gflops=round(gflops, 1),
                            x_first=round(gflops / first_rate, 2),
                            peak_fraction=round(gflops / max(peaks[dtype].values()), 3),
                            mean_train_loss=round(sum(losses) / len(losses), 4), train_losses=losses,
                            metric=task.metric_names[0],
                            score=round(score(task, predictions, golds)[task.metric_names[0]], 3),
                            same_predictions_as_first=sum(predictions[q] == first[q] for q in shared),
                            queries=len(shared)))
        print(json.dumps(results[-1]), flush=True)
    ref = results[0]
    print(f"\n{task.name}, {args.users} users x {args.history} items x {args.epochs:g} epochs on {device}; "
          + "; ".join(f"{n} users: {w['tokens']:.0f} trained tokens ({w['supervised']:.0f} supervised), "
                      f"{w['total'] / 1e12:.2f} TFLOP of work" for n, w in works.items()))
    print("matmul peak GFLOP/s: " + "; ".join(f"{d}: " + ", ".join(f"{k} {v:.0f}" for k, v in p.items())
                                               for d, p in peaks.items()))
    print(f"| mode | dtype | users | s | users/h | x {ref['mode']} | GFLOP/s | of peak | mean loss | {ref['metric']} "
          f"| same predictions |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['dtype']} | {r['users']} | {r['seconds']} | {r['users_per_hour']} | "
              f"{r['x_first']:.2f} | {r['gflops']} | {r['peak_fraction']:.0%} | "
              f"{r['mean_train_loss']} | {r['score']} | {r['same_predictions_as_first']}/{r['queries']} |")
    save_report(args.out, task=task.name, device=device, users=common["users"], history=args.history,
                epochs=args.epochs, shape={k: v for k, v in shape.items() if k != "shapes"}, work=works, peaks=peaks,
                results=results)


if __name__ == "__main__":
    main()
