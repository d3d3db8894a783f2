"""Users/hour and trained tokens/s of per-user adapter training: a reference-style loop vs this project's paths.

    .venv/bin/oppu-hub data build --source_dir ../shared/data --out_dir /tmp/bench-data --tasks LaMP-2N
    .venv/bin/python bench/train_users.py --data_dir /tmp/bench-data --users 8 --history 8 --epochs 1

Modes, all on the same users, items (each user's ``--history`` most recent), epochs and hyperparameters, in one run:

* ``reference``: one user at a time, fp32, a new peft model + ``SFTTrainer`` per user, padded batches of that user's
  items (``train_users`` with ``--precision fp32 --concurrent 1``; the base is loaded once).
* ``default``: this project's default (``train_users``: sequential, bf16 autocast where the CPU has it).
* ``concurrent``: ``train_users --concurrent N`` (trainers/concurrent.py), in bf16 where available; ``concurrent-fp32``
  the same in fp32 (to separate the batching gain from the dtype gain).

Tokens are the non-padding tokens of the training rows (prompt + completion + EOS) times epochs, the same count for
every mode. Model FLOPs = 6 x P x tokens with P = every parameter of the base (embeddings included); the fraction is
against the best matmul throughput measured in this run with torch matmuls of the model's shapes, for the dtype the
mode trains in. Quality: the mean final training loss (``oppu.json``) and accuracy on those users' test queries.
Prints a table and writes ``bench/results/train_users.json``.
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

from oppu_hub.adapters import AdapterRecord  # noqa: E402
from oppu_hub.data import load_task_split  # noqa: E402
from oppu_hub.inference import PredictConfig, predict  # noqa: E402
from oppu_hub.models import load_base, resolve_base  # noqa: E402
from oppu_hub.prompts import PromptBuilder, history_examples  # noqa: E402
from oppu_hub.tasks import get_task  # noqa: E402
from trainers import UserAdapterConfig, train_users  # noqa: E402
from trainers.common import bf16_available, set_threads  # noqa: E402
from trainers.concurrent import tokenize_rows  # noqa: E402


def matmul_peak(dtype: torch.dtype, tokens: int = 1024, hidden: int = 576, inter: int = 1536,
                seconds: float = 1.0) -> dict[str, float]:
    """GFLOP/s of ``x @ W^T`` for the model's projection shapes (q/o, MLP up/gate, MLP down)."""
    out = {}
    for name, (k, n) in {"q/o 576x576": (hidden, hidden), "up 576x1536": (hidden, inter),
                         "down 1536x576": (inter, hidden)}.items():
        x, w = torch.randn(tokens, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
        for _ in range(3):
            x @ w.T
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            x @ w.T
            reps += 1
        out[name] = 2 * tokens * k * n * reps / (time.perf_counter() - start) / 1e9
    return out


def count_tokens(config: UserAdapterConfig, users: list[str], tokenizer) -> int:
    task = get_task(config.task)
    split = load_task_split(config.data_dir, task, "test")
    builder = PromptBuilder(task, tokenizer, config.max_prompt_length)
    total = 0
    for user in users:
        history = list(split.user_history(user))[-config.max_history:]
        rows = tokenize_rows(history_examples(builder, history, config.k), tokenizer, config.max_prompt_length + 128)
        total += sum(len(r.input_ids) for r in rows)
    return int(total * config.num_train_epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/bench-data")
    parser.add_argument("--base", default="SmolLM2-135M-Instruct", help="base model folder or the default name")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--history", type=int, default=8, help="most recent history items per user")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=["reference", "default", "concurrent", "concurrent-fp32"])
    parser.add_argument("--out", default=str(REPO / "bench/results/train_users.json"))
    args = parser.parse_args()
    set_threads()
    base = resolve_base(args.base)
    split = load_task_split(args.data_dir, get_task("LaMP-2N"), "test")
    users = [u for u in split.user_ids if len(split.user_history(u)) >= args.history][:args.users]
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-"))
    common = dict(task="LaMP-2N", data_dir=args.data_dir, base_dir=base, users=users, max_history=args.history,
                  num_train_epochs=args.epochs)
    modes = {"reference": dict(precision="fp32", concurrent=1), "default": dict(concurrent=1),
             "concurrent": dict(concurrent=args.concurrent), "concurrent-fp32": dict(precision="fp32",
                                                                                      concurrent=args.concurrent)}
    bf16 = bf16_available()
    peaks = {"fp32": matmul_peak(torch.float32)}
    if bf16:
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    model, tokenizer = load_base(base)
    params = sum(p.numel() for p in model.parameters())
    del model
    results = []
    tokens = None
    for mode in args.modes:
        config = UserAdapterConfig(**common, **modes[mode], output_dir=str(scratch / mode))
        tokens = tokens or count_tokens(config, users, tokenizer)
        start = time.perf_counter()
        report = train_users(config)
        seconds = time.perf_counter() - start
        assert sorted(report.trained) == sorted(users), report
        dtype = "bf16" if config.precision == "bf16" or (config.precision == "auto" and bf16) else "fp32"
        losses = [AdapterRecord.from_folder(config.adapters_dir() / u).train_loss for u in users]
        _, _, scores = predict(PredictConfig(task="LaMP-2N", data_dir=args.data_dir, base_dir=base, users=users,
                                             adapters_dir=str(config.adapters_dir()),
                                             output=str(scratch / f"{mode}-predictions.json")))
        flops = 6 * params * tokens / seconds
        results.append(dict(mode=mode, dtype=dtype, seconds=round(seconds, 1),
                            users_per_hour=round(len(users) * 3600 / seconds, 1),
                            tokens_per_s=round(tokens / seconds, 1), gflops=round(flops / 1e9, 1),
                            peak_fraction=round(flops / 1e9 / max(peaks[dtype].values()), 3),
                            mean_train_loss=round(sum(losses) / len(losses), 4),
                            accuracy=round((scores or {}).get("accuracy", float("nan")), 3)))
        print(json.dumps(results[-1]), flush=True)
    ref = next((r for r in results if r["mode"] == "reference"), results[0])
    print(f"\n{len(users)} users x {args.history} items x {args.epochs} epoch(s), {tokens} trained tokens per mode, "
          f"P = {params / 1e6:.1f}M")
    print("matmul peak GFLOP/s: " + "; ".join(f"{d}: " + ", ".join(f"{k} {v:.0f}" for k, v in p.items())
                                               for d, p in peaks.items()))
    print("| mode | dtype | s | users/h | tokens/s | x reference | GFLOP/s (6PT) | of peak | mean loss | acc |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['dtype']} | {r['seconds']} | {r['users_per_hour']} | {r['tokens_per_s']} | "
              f"{r['users_per_hour'] / ref['users_per_hour']:.2f} | {r['gflops']} | {r['peak_fraction']:.0%} | "
              f"{r['mean_train_loss']} | {r['accuracy']} |")
    save_report(args.out, users=users, tokens=tokens, params=params, peaks=peaks, results=results)


if __name__ == "__main__":
    main()
