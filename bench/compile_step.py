"""Does ``torch.compile`` (or dropping the padding mask) speed up the concurrent trainer's step on this CPU?

    .venv/bin/python bench/compile_step.py --rows 8 --tokens 160 --steps 6

One forward + backward of the concurrent trainer's model (the default base with :mod:`trainers.multi_lora` layers
of 8 slots, LoRA r=16 on q/v, rows routed to different slots; the frozen base, the LM head only at the last 19
positions as the trainer does) on a fixed ``rows x tokens`` batch, in fp32 and in bf16 autocast, for:

* ``eager``: as the trainer runs today (a padding mask: half the rows left-padded by 30 tokens);
* ``eager-no-mask``: the same batch with no attention mask (rows bucketed to equal length could be run this way,
  with ``is_causal`` attention);
* ``compiled``: every decoder layer compiled in place (``nn.Module.compile``, inductor), padding mask as ``eager``.
  Its first step is the compile time; ``steady`` is the median of the later steps.

Prints a table and writes ``bench/results/compile_step.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _report import save_report  # noqa: E402

from oppu_hub.models import bf16_available, load_base  # noqa: E402
from trainers.common import set_threads  # noqa: E402
from trainers.multi_lora import Route, multi_lora  # noqa: E402


def timed_steps(model, ids: torch.Tensor, mask: torch.Tensor | None, bf16: bool, steps: int) -> list[float]:
    """Seconds of each forward + backward (LM head at the last 19 positions, as the trainer's label positions)."""
    decoder, head = model.model, model.get_output_embeddings()
    positions = torch.arange(ids.shape[1] - 20, ids.shape[1] - 1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        with autocast:
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = head(hidden[:, positions])
        F.cross_entropy(logits.float().flatten(0, 1), ids[:, positions + 1].flatten()).backward()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="SmolLM2-135M-Instruct")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default=str(REPO / "bench/results/compile_step.json"))
    args = parser.parse_args()
    set_threads()
    model, _ = load_base(args.base)
    model.requires_grad_(False)
    model.train()
    ranks = {n: 16 for n, _ in model.named_modules() if n.endswith(("q_proj", "v_proj"))}
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.rows, args.tokens))
    mask = torch.ones_like(ids)
    mask[: args.rows // 2, :30] = 0
    dtypes = [False, True] if bf16_available() else [False]
    results = []
    route = Route()
    with multi_lora(model, ranks, 8, 1.0, 0.0, route, torch.device("cpu")) as layers:
        for layer in layers.values():
            torch.nn.init.normal_(layer.A, std=0.02)
            torch.nn.init.normal_(layer.B, std=0.02)
            layer.A.requires_grad_(True)
            layer.B.requires_grad_(True)
        route.slots = torch.arange(args.rows) % 8
        variants = [("eager", mask), ("eager-no-mask", None), ("compiled", mask)]
        for variant, variant_mask in variants:
            if variant == "compiled":
                for block in model.model.layers:
                    block.compile()
            for bf16 in dtypes:
                seconds = timed_steps(model, ids, variant_mask, bf16, args.steps)
                results.append(dict(variant=variant, dtype="bf16" if bf16 else "fp32", first_s=round(seconds[0], 3),
                                    steady_s=round(statistics.median(seconds[2:]), 3)))
                print(results[-1], flush=True)
    eager = {r["dtype"]: r["steady_s"] for r in results if r["variant"] == "eager"}
    print(f"\n{args.rows} rows x {args.tokens} tokens, {torch.get_num_threads()} threads")
    print("| variant | dtype | first step s | steady step s | x eager |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['dtype']} | {r['first_s']} | {r['steady_s']} | "
              f"{eager[r['dtype']] / r['steady_s']:.2f} |")
    save_report(args.out, rows=args.rows, tokens=args.tokens, steps=args.steps, results=results)


if __name__ == "__main__":
    main()
