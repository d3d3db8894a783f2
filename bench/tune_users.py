"""Sweep user-adapter learning rate and epochs on DEV users (never test users) and print a table.

    python bench/tune_users.py --data_dir runs/demo/data --base_dir runs/demo/base/LaMP-2N/k0 --task LaMP-2N

Writes ``bench/results/tune_users-{task}.json``. Every configuration trains the same dev users from the same base;
the score is on those users' held-out queries, compared with the base alone (lr 0: no adapter).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

from oppu_hub.inference import Generator, PredictConfig, predict
from oppu_hub.models import BaseModelConfig, load_base
from oppu_hub.tasks import get_task
from trainers import UserAdapterConfig, train_users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="LaMP-2N")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--base_dir", required=True)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3, 3e-3])
    parser.add_argument("--epochs", type=float, nargs="+", default=[2, 3])
    parser.add_argument("--max_history", type=int, default=16)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    task = get_task(args.task)
    generator = Generator(*load_base(BaseModelConfig(args.base_dir)))
    common = dict(task=task.name, data_dir=args.data_dir, split="dev")
    scratch = tempfile.TemporaryDirectory()
    _, _, base_scores = predict(PredictConfig(**common, base_dir=args.base_dir,
                                              output=f"{scratch.name}/base.json"), generator)
    rows = [{"lr": 0.0, "epochs": 0, **base_scores, "seconds": 0.0}]
    for lr, epochs in itertools.product(args.lrs, args.epochs):
        with tempfile.TemporaryDirectory(dir=scratch.name) as out:
            config = UserAdapterConfig(**common, base_dir=args.base_dir, output_dir=out, learning_rate=lr,
                                       num_train_epochs=epochs, max_history=args.max_history)
            start = time.perf_counter()
            report = train_users(config)
            seconds = time.perf_counter() - start
            if report.failed:
                raise RuntimeError(report.failed)
            predict_config = PredictConfig(**common, base_dir=args.base_dir, adapters_dir=str(config.adapters_dir()),
                                           output=str(Path(out) / "preds.json"))
            _, _, scores = predict(predict_config, generator)
        rows.append({"lr": lr, "epochs": epochs, **scores, "seconds": round(seconds, 1)})
        print(rows[-1], flush=True)
    m1, m2 = task.metric_names
    print(f"\n{task.name} dev users: user-adapter sweep (lr 0 = the task-adapted base alone)\n")
    print(f"| lr | epochs | {m1} | {m2} | train s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lr']:g} | {r['epochs']:g} | {r[m1]:.3f} | {r[m2]:.3f} | {r['seconds']:.0f} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"tune_users-{task.name}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
