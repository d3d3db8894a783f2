"""Serving many users' adapters on one base: per-request adapter swapping vs mixed-user batches.

    .venv/bin/python bench/serve_users.py --data_dir /tmp/bench-data --users 8 --requests 32

A burst of ``--requests`` requests from ``--users`` users (round-robin, so consecutive requests belong to different
users) arrives at t=0 and is served first-in first-out by :class:`oppu_hub.inference.Generator`:

* ``swap``: one request at a time, the adapter swapped per request (``max_adapters=1``: the previous adapter is
  deleted and the next loaded from disk; what a server without multi-adapter support does).
* ``resident``: one request at a time, every adapter resident (no load cost; isolates the batching gain).
* ``mixed-B``: batches of ``B`` consecutive requests, each row with its own user's adapter (peft ``adapter_names``).

Latency of a request = when its batch finished (all arrived at t=0); tokens = generated tokens (the outputs are the
same in every mode, checked). Adapters: random LoRA r=8 on q/v (small B, so outputs stay fluent), saved as oppu-hub
adapter folders. Prints a table and writes ``bench/results/serve_users.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
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
from oppu_hub.inference import Generator  # noqa: E402
from oppu_hub.models import load_base, model_fingerprint, resolve_base  # noqa: E402
from oppu_hub.prompts import PromptBuilder, history_examples  # noqa: E402
from oppu_hub.tasks import get_task  # noqa: E402
from trainers.common import set_threads  # noqa: E402


def make_adapters(base: str, users: list[str], root: Path) -> list[Path]:
    from peft import LoraConfig, get_peft_model

    model, _ = load_base(base)
    fingerprint = model_fingerprint(model)
    folders = []
    for i, user in enumerate(users):
        torch.manual_seed(i)
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.05)
        folder = root / f"user{i}"
        peft_model.save_pretrained(folder)
        AdapterRecord(user_id=user, task="LaMP-2N", base_model=base, base_fingerprint=fingerprint).save(folder)
        peft_model.base_model.unload()
        folders.append(folder)
    return folders


def serve(gen: Generator, folders: list[Path], prompts: list[str], owners: list[int], batch: int,
          max_new_tokens: int) -> tuple[list[str], list[float], float]:
    """FIFO batches of ``batch`` requests; returns outputs, per-request latencies and the total time."""
    outputs, latencies = [], []
    start = time.perf_counter()
    for i in range(0, len(prompts), batch):
        names = [gen.load(folders[owners[j]]) for j in range(i, min(i + batch, len(prompts)))]
        outputs += gen.generate(prompts[i:i + batch], names, max_new_tokens, batch_size=batch)
        latencies += [time.perf_counter() - start] * len(names)
    return outputs, latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/bench-data")
    parser.add_argument("--base", default="SmolLM2-135M-Instruct")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--max_new_tokens", type=int, default=8, help="LaMP-2N's answer budget is 8")
    parser.add_argument("--out", default=str(REPO / "bench/results/serve_users.json"))
    args = parser.parse_args()
    set_threads()
    base = resolve_base(args.base)
    task = get_task("LaMP-2N")
    split = load_task_split(args.data_dir, task, "test")
    users = split.user_ids[:args.users]
    model, tokenizer = load_base(base)
    builder = PromptBuilder(task, tokenizer, 384)
    per_user = {u: [r["prompt"] for r in history_examples(builder, split.user_history(u)[-args.requests:])]
                for u in users}
    owners = [i % len(users) for i in range(args.requests)]
    prompts = [per_user[users[o]][i // len(users) % len(per_user[users[o]])] for i, o in enumerate(owners)]
    folders = make_adapters(base, users, Path(tempfile.mkdtemp(prefix="bench-serve-")))
    modes = [("swap", 1, 1), ("resident", len(users), 1)] + [(f"mixed-{b}", len(users), b) for b in args.batches]
    results, reference = [], None
    for mode, resident, batch in modes:
        gen = Generator(model, tokenizer, max_adapters=resident)
        serve(gen, folders, prompts[:2], owners[:2], 1, 2)  # warm-up (first adapter load, first generate)
        outputs, latencies, seconds = serve(gen, folders, prompts, owners, batch, args.max_new_tokens)
        if gen.model is not gen.base:
            gen.model.base_model.unload()  # the shared base comes back clean for the next mode
        reference = reference or outputs
        tokens = sum(len(tokenizer(o, add_special_tokens=False).input_ids) + 1 for o in outputs)
        q = statistics.quantiles(latencies, n=20)
        results.append(dict(mode=mode, batch=batch, seconds=round(seconds, 2), tokens=tokens,
                            tokens_per_s=round(tokens / seconds, 1), requests_per_s=round(len(prompts) / seconds, 2),
                            p50_s=round(statistics.median(latencies), 2), p95_s=round(q[18], 2),
                            same_outputs_as_swap=sum(a == b for a, b in zip(outputs, reference, strict=True))))
        print(json.dumps(results[-1]), flush=True)
    ref = results[0]
    print(f"\n{args.requests} requests from {len(users)} users at t=0, max_new_tokens={args.max_new_tokens}, "
          f"{torch.get_num_threads()} threads")
    print("| mode | batch | s | tokens/s | x swap | req/s | p50 s | p95 s | same outputs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['batch']} | {r['seconds']} | {r['tokens_per_s']} | "
              f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f} | {r['requests_per_s']} | {r['p50_s']} | {r['p95_s']} | "
              f"{r['same_outputs_as_swap']}/{args.requests} |")
    save_report(args.out, results=results)


if __name__ == "__main__":
    main()
