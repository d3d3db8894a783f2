"""Serving many users' adapters on one base: per-request adapter swapping vs mixed-user batches.

    .venv/bin/python bench/serve_users.py --data_dir /tmp/bench-data --users 8 --requests 32

A burst of ``--requests`` requests from ``--users`` users (round-robin, so consecutive requests belong to different
users) arrives at t=0 and is served first-in first-out by :class:`oppu_hub.inference.Generator`:

* ``swap``: one request at a time, the adapter swapped per request (``max_adapters=1``: the previous adapter is
  deleted and the next loaded from disk with peft; what a server without multi-adapter support does).
* ``resident``: one request at a time, every adapter resident (no load cost; isolates the batching gain).
* ``mixed-B``: batches of ``B`` consecutive requests, each row with its own user's adapter (peft ``adapter_names``,
  which loops over the adapters of a batch in every layer).
* ``sorted-B``: as ``mixed-B``, but the queue is served shortest prompt first, so a batch's prompts have similar
  lengths and its prefill pads little (all requests arrived together, so reordering keeps nobody waiting longer
  than the whole burst).
* ``gathered-B`` / ``gathered-sorted-B``: as ``mixed-B`` / ``sorted-B`` with the adapters in the gathered
  multi-LoRA bank (:mod:`oppu_hub.lora_bank`, the default backend): one gathered low-rank product per layer.
* ``contrastive-B``: ``gathered-B`` with contrastive personal decoding (``oppu-cd``, the decoding defaults of
  :class:`~oppu_hub.decoding_config.DecodingOptions`): each request also runs on the base in the same batch, so its
  cost against ``gathered-B`` is the price of the method (its outputs differ from plain decoding by design).

Prompts are the task's query prompts (``--task``, k=0; the first ``--requests`` training queries, so real prompt
lengths), with the task's answer
budget. Latency of a request = when its batch finished (all arrived at t=0); tokens = generated tokens (the outputs
are the same in every mode, checked). Where the time goes: each mode is run a second time with one new token, whose
time is its prefill (and the first token); decode = the rest. Adapters: random LoRA r=8 on q/v (small B, so outputs
stay fluent), saved as oppu-hub adapter folders. Prints a table and writes ``bench/results/serve_users[-TASK].json``.
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
from oppu_hub.decoding_config import DecodingOptions  # noqa: E402
from oppu_hub.inference import Generator  # noqa: E402
from oppu_hub.models import load_base, model_fingerprint, resolve_base  # noqa: E402
from oppu_hub.prompts import PromptBuilder, query_prompt  # noqa: E402
from oppu_hub.tasks import Task, get_task  # noqa: E402
from trainers.common import set_threads  # noqa: E402


def make_adapters(base: str, task: Task, users: list[str], root: Path) -> list[Path]:
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
        AdapterRecord(user_id=user, task=task.name, base_model=base, base_fingerprint=fingerprint).save(folder)
        peft_model.base_model.unload()
        folders.append(folder)
    return folders


def serve(gen: Generator, folders: list[Path], prompts: list[str], owners: list[int], batch: int,
          max_new_tokens: int, order: list[int] | None = None, contrast: tuple[float, float] | None = None
          ) -> tuple[list[str], list[float], float]:
    """Batches of ``batch`` requests in ``order`` (default FIFO; ``contrast``: contrastive decoding); returns the
    outputs and latencies in request order, and the total time."""
    order = order or list(range(len(prompts)))
    outputs, latencies = [""] * len(prompts), [0.0] * len(prompts)
    start = time.perf_counter()
    for i in range(0, len(order), batch):
        rows = order[i:i + batch]
        names = [gen.load(folders[owners[j]]) for j in rows]
        texts = gen.generate([prompts[j] for j in rows], names, max_new_tokens, batch_size=batch, contrast=contrast)
        for j, text in zip(rows, texts, strict=True):
            outputs[j], latencies[j] = text, time.perf_counter() - start
    return outputs, latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/bench-data")
    parser.add_argument("--base", default="SmolLM2-135M-Instruct")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--task", default="LaMP-2N", help="whose prompts and answer budget")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each mode this many times and report its median run (a shared VM is noisy)")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default: the task's answer budget")
    parser.add_argument("--out", default=None, help="default bench/results/serve_users[-TASK].json")
    args = parser.parse_args()
    set_threads()
    base = resolve_base(args.base)
    task = get_task(args.task)
    max_new_tokens = args.max_new_tokens or task.max_new_tokens
    out = args.out or str(REPO / "bench/results" / ("serve_users.json" if task.name == "LaMP-2N"
                                                    else f"serve_users-{task.name}.json"))
    users = load_task_split(args.data_dir, task, "test").user_ids[:args.users]
    if len(users) < args.users:
        raise SystemExit(f"{task.name} has {len(users)} test users, not {args.users}")
    queries = load_task_split(args.data_dir, task, "train").questions[:args.requests]
    model, tokenizer = load_base(base)
    builder = PromptBuilder(task, tokenizer, 384)
    prompts = [query_prompt(builder, q, [], 0) for q in queries]
    owners = [i % len(users) for i in range(len(prompts))]
    folders = make_adapters(base, task, users, Path(tempfile.mkdtemp(prefix="bench-serve-")))
    lengths = [len(tokenizer(p).input_ids) for p in prompts]
    by_length = sorted(range(len(prompts)), key=lengths.__getitem__)
    decoding = DecodingOptions()
    cd = (decoding.contrast_alpha, decoding.contrast_beta)
    modes = [("swap", 1, 1, None, "peft", None), ("resident", len(users), 1, None, "peft", None)]
    modes += [(f"{kind}-{b}", len(users), b, order, backend, contrast) for b in args.batches
              for kind, order, backend, contrast in (
                  ("mixed", None, "peft", None), ("sorted", by_length, "peft", None),
                  ("gathered", None, "gathered", None), ("gathered-sorted", by_length, "gathered", None),
                  ("contrastive", None, "gathered", cd))]
    results, reference = [], None
    for mode, resident, batch, order, backend, contrast in modes:
        gen = Generator(model, tokenizer, max_adapters=resident, lora_backend=backend)
        serve(gen, folders, prompts[:2], owners[:2], 1, 2)  # warm-up (first adapter load, first generate)
        runs = sorted((serve(gen, folders, prompts, owners, batch, max_new_tokens, order, contrast)
                       for _ in range(args.repeats)), key=lambda run: run[2])
        outputs, latencies, seconds = runs[len(runs) // 2]
        prefill = statistics.median(serve(gen, folders, prompts, owners, batch, 1, order, contrast)[2]
                                    for _ in range(args.repeats))
        gen.close()  # the shared base comes back clean for the next mode
        reference = reference or outputs
        tokens = sum(len(tokenizer(o, add_special_tokens=False).input_ids) + 1 for o in outputs)
        q = statistics.quantiles(latencies, n=20)
        results.append(dict(mode=mode, backend=backend, contrast=contrast, batch=batch, seconds=round(seconds, 2),
                            tokens=tokens,
                            tokens_per_s=round(tokens / seconds, 1), requests_per_s=round(len(prompts) / seconds, 2),
                            prefill_s=round(prefill, 2), decode_s=round(max(0.0, seconds - prefill), 2),
                            p50_s=round(statistics.median(latencies), 2), p95_s=round(q[18], 2),
                            same_outputs_as_swap=sum(a == b for a, b in zip(outputs, reference, strict=True))))
        print(json.dumps(results[-1]), flush=True)
    ref = results[0]
    print(f"\n{task.name}: {args.requests} requests from {len(users)} users at t=0, prompts {min(lengths)}-"
          f"{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), max_new_tokens={max_new_tokens}, "
          f"{torch.get_num_threads()} threads")
    print("| mode | batch | s | tokens/s | x swap | prefill s | decode s | p50 s | p95 s | same outputs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['batch']} | {r['seconds']} | {r['tokens_per_s']} | "
              f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f} | {r['prefill_s']} | {r['decode_s']} | {r['p50_s']} | "
              f"{r['p95_s']} | {r['same_outputs_as_swap']}/{args.requests} |")
    save_report(out, task=task.name, repeats=args.repeats, prompt_tokens=lengths, max_new_tokens=max_new_tokens,
                results=results)


if __name__ == "__main__":
    main()
