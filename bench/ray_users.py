"""Users per hour of ``train-users`` on one machine vs on a local Ray cluster with 1 and 2 worker processes.

    python bench/ray_users.py                      # the default SmolLM2-135M base, 6 synthetic LaMP-2N users
    python bench/ray_users.py --base tiny --users 4

Every run trains the same users from scratch into its own folder; wall time includes loading the base (in each Ray
worker) but not starting the cluster. The single-machine run is measured first and again last, as the load of a
shared machine drifts. Prints a table and writes ``bench/results/ray_users.json``. On a 2-core
machine expect little gain from 2 workers: the point is that the same code path runs per worker.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import ray
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from oppu_hub.data import LampSplit, Question, write_split
from oppu_hub.distributed import train_users_on_ray
from oppu_hub.distributed_config import RayOptions
from oppu_hub.models import ensure_default_base
from oppu_hub.tasks import NEWS_CATEGORIES, get_task
from trainers import UserAdapterConfig, train_users

TOPICS = ["harbor", "quantum", "violin", "glacier", "saffron", "tundra", "marble", "cobalt"]


def synthetic_users(folder: Path, users: int, history: int) -> Path:
    """LaMP-2N test data of ``users`` users, each with ``history`` items about one topic word in one category (a
    signal an adapter can learn); returns the data folder."""
    task = get_task("LaMP-2N")
    questions = []
    for n in range(users):
        word, label = TOPICS[n % len(TOPICS)], NEWS_CATEGORIES[n % len(NEWS_CATEGORIES)]
        items = [{"id": f"u{n}-{j}", "text": f"{word} story number {j} about the {word} of day {j}",
                  "title": f"{word} {j}", "category": label,
                  "date": (dt.date(2020, 1, 1) + dt.timedelta(days=j)).isoformat()} for j in range(history)]
        query = task.format_input(text=f"{word} story number {history} about the {word} of day {history}")
        questions.append(Question(f"q{n}", query, items, f"u{n}", label))
    write_split(LampSplit(task, questions), folder / task.name, "test")
    return folder


def tiny_base(folder: Path) -> Path:
    """A 2-layer random Llama with the default base's tokenizer, saved as a model folder."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_default_base())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="default", help="'default' (SmolLM2-135M), 'tiny', or a model folder")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--history", type=int, default=8, help="history items per user")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default="bench/results/ray_users.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    base = {"default": lambda: ensure_default_base(), "tiny": lambda: tiny_base(scratch / "tiny")}.get(
        args.base, lambda: Path(args.base))()
    data = synthetic_users(scratch / "data", args.users, args.history)
    cpus = os.cpu_count() or 1

    def config(name: str) -> UserAdapterConfig:
        return UserAdapterConfig(task="LaMP-2N", data_dir=str(data), base_dir=str(base), output_dir=str(scratch / name),
                                 num_train_epochs=args.epochs, per_device_train_batch_size=4, precision="fp32")

    rows = []

    def record(mode: str, workers: int, seconds: float, report) -> None:
        if report.failed or len(report.trained) != args.users:
            raise RuntimeError(f"{mode}: {report.failed}")
        rows.append({"mode": mode, "workers": workers, "users": args.users, "seconds": round(seconds, 1),
                     "users_per_hour": round(args.users / seconds * 3600),
                     "mean_user_seconds": round(sum(report.seconds.values()) / args.users, 2)})
        print(f"{mode:<22} {workers:>7} {args.users:>5} {seconds:>9.1f} {rows[-1]['users_per_hour']:>10}",
              flush=True)

    print(f"{'mode':<22} {'workers':>7} {'users':>5} {'seconds':>9} {'users/h':>10}", flush=True)
    start = time.perf_counter()
    report = train_users(config("single"))
    record("single machine", 1, time.perf_counter() - start, report)
    ray.init(num_cpus=cpus, object_store_memory=150 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        for workers in args.workers:
            cpus_per_worker = max(1, cpus // workers)
            start = time.perf_counter()
            report = train_users_on_ray(config(f"ray{workers}"), RayOptions(
                ray="", num_workers=workers, cpus_per_worker=cpus_per_worker))
            record(f"ray ({cpus_per_worker} cpu/worker)", workers, time.perf_counter() - start, report)
    finally:
        ray.shutdown()
    start = time.perf_counter()  # once more: on a shared machine the load drifts during the benchmark
    report = train_users(config("single-again"))
    record("single machine (again)", 1, time.perf_counter() - start, report)
    result = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {cpus} CPUs",
              "base": str(base), "users": args.users, "history": args.history, "epochs": args.epochs,
              "ray": ray.__version__, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
