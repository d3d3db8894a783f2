"""Users/hour of per-user adapter training at a real workload: the sequential reference vs concurrent training.

    .venv/bin/oppu-hub data build --source_dir ../shared/data --out_dir /tmp/bench-data --tasks LaMP-2N
    .venv/bin/python bench/train_users.py --data_dir /tmp/bench-data --users 8 --history 16 --epochs 2

Every mode trains the same users on the same items (each user's ``--history`` most recent), epochs and
hyperparameters (the LaMP-2N dev-tuned defaults of :mod:`oppu_hub.tuned`), in one run:

* ``reference``: one user at a time, an ``SFTTrainer`` per user (``train-users --concurrent 1``), fp32;
* ``concurrent``: the default (``train-users``: users together in slots, trainers/concurrent.py), fp32;
* ``sequential-bf16`` / ``concurrent-bf16``: the same in bf16 autocast, where the CPU has AVX512-BF16/AMX (their
  "x reference" column compares across dtypes and says so).

Work is the honest model of :mod:`_work` (frozen base: no weight gradients; the LM head only where a loss is
taken), the same count for every mode; "of peak" is against the best torch matmul of the model's shapes measured
in this run for the mode's dtype. Quality: each mode's mean final training loss and its predictions on the users'
test queries, compared with the reference's. Prints a table and writes ``bench/results/train_users.json``.
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
from oppu_hub.tasks import get_task  # noqa: E402
from oppu_hub.tuned import user_settings  # noqa: E402
from trainers import UserAdapterConfig, train_users  # noqa: E402
from trainers.common import max_length, set_threads  # noqa: E402
from trainers.rows import tokenize_rows  # noqa: E402
from trainers.runs import Workspace  # noqa: E402

TASK = get_task("LaMP-2N")
MODES = {"reference": dict(precision="fp32", concurrent=1), "concurrent": dict(precision="fp32", concurrent=0),
         "sequential-bf16": dict(precision="bf16", concurrent=1), "concurrent-bf16": dict(precision="bf16",
                                                                                          concurrent=0)}


def workload(data_dir: str, base: str, users: int, history: int, epochs: float) -> dict:
    """The ``UserAdapterConfig`` fields every mode shares: the first ``users`` LaMP-2N test users with at least
    ``history`` items, their ``history`` latest items, ``epochs`` and the task's dev-tuned adapter settings."""
    split = load_task_split(data_dir, TASK, "test")
    chosen = [u for u in split.user_ids if len(split.user_history(u)) >= history][:users]
    return dict(user_settings(TASK.name, num_train_epochs=epochs), task=TASK.name, data_dir=data_dir, base_dir=base,
                users=chosen, max_history=history)


def training_rows(config: UserAdapterConfig, users: list[str], model, tokenizer) -> list:
    """The tokenized rows the users train on: each user's job as the trainers plan it, tokenized as both do."""
    split = load_task_split(config.data_dir, TASK, "test")
    workspace = Workspace(config, split, model, tokenizer, model_fingerprint(model), None,
                          PromptBuilder(TASK, tokenizer, config.max_prompt_length))
    return [row for user in users for row in tokenize_rows(workspace.plan(user).rows, tokenizer, max_length(config))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/bench-data")
    parser.add_argument("--base", default="SmolLM2-135M-Instruct", help="base model folder or the default name")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--history", type=int, default=16, help="most recent history items per user")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--modes", nargs="+", choices=list(MODES),
                        default=["reference", "concurrent", *(["sequential-bf16", "concurrent-bf16"]
                                                              if bf16_available() else [])])
    parser.add_argument("--out", default=str(REPO / "bench/results/train_users.json"))
    args = parser.parse_args()
    set_threads()
    base = resolve_base(args.base)
    common = workload(args.data_dir, base, args.users, args.history, args.epochs)
    users = common["users"]
    split = load_task_split(args.data_dir, TASK, "test")
    golds = {q.id: q.gold for u in users for q in split.user_questions(u)}
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model, tokenizer = load_base(base)
    template = UserAdapterConfig(**common, output_dir=str(scratch / "plan"))  # nothing trained there
    shape = model_shape(model, template.targets(), template.lora_r)
    work = training_flops(shape, training_rows(template, users, model, tokenizer), args.epochs)
    del model
    peaks = {"fp32": matmul_peak(torch.float32, shape)}
    if any(MODES[m]["precision"] == "bf16" for m in args.modes):
        peaks["bf16"] = matmul_peak(torch.bfloat16, shape)
    results, reference = [], None
    for mode in args.modes:
        config = UserAdapterConfig(**common, **MODES[mode], output_dir=str(scratch / mode))
        start = time.perf_counter()
        report = train_users(config)
        seconds = time.perf_counter() - start
        assert sorted(report.trained) == sorted(users), report
        losses = [AdapterRecord.from_folder(config.adapters_dir() / u).train_loss for u in users]
        predictions = predict(PredictConfig(task=TASK.name, data_dir=args.data_dir, base_dir=base, users=users,
                                            adapters_dir=str(config.adapters_dir())))
        reference = reference or predictions
        dtype = MODES[mode]["precision"]
        gflops = work["total"] / seconds / 1e9
        results.append(dict(mode=mode, dtype=dtype, seconds=round(seconds, 1),
                            users_per_hour=round(len(users) * 3600 / seconds, 1),
                            tokens_per_s=round(work["tokens"] / seconds, 1), gflops=round(gflops, 1),
                            peak_fraction=round(gflops / max(peaks[dtype].values()), 3),
                            mean_train_loss=round(sum(losses) / len(losses), 4), train_losses=losses,
                            accuracy=round(score(TASK, predictions, golds)["accuracy"], 3),
                            same_predictions_as_reference=sum(predictions[q] == reference[q] for q in golds),
                            queries=len(golds)))
        print(json.dumps(results[-1]), flush=True)
    ref = results[0]
    print(f"\n{len(users)} users x {args.history} items x {args.epochs:g} epochs; per mode {work['tokens']:.0f} "
          f"trained tokens ({work['supervised']:.0f} supervised), {work['total'] / 1e12:.2f} TFLOP of work")
    print("matmul peak GFLOP/s: " + "; ".join(f"{d}: " + ", ".join(f"{k} {v:.0f}" for k, v in p.items())
                                               for d, p in peaks.items()))
    print("| mode | dtype | s | users/h | x reference | GFLOP/s | of peak | mean loss | acc | same predictions |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['dtype']} | {r['seconds']} | {r['users_per_hour']} | "
              f"{r['users_per_hour'] / ref['users_per_hour']:.2f} | {r['gflops']} | {r['peak_fraction']:.0%} | "
              f"{r['mean_train_loss']} | {r['accuracy']} | {r['same_predictions_as_reference']}/{r['queries']} |")
    save_report(args.out, users=users, shape={k: v for k, v in shape.items() if k != "shapes"}, work=work,
                peaks=peaks, results=results)


if __name__ == "__main__":
    main()
