"""Where a training step's time goes: ``torch.profiler`` over the reference and the concurrent path.

    .venv/bin/python bench/profile_step.py --data_dir /tmp/bench-data --users 8 --history 16 --epochs 1

Trains the workload of ``bench/train_users.py`` (its users, items and dev-tuned settings) once per mode under the
CPU profiler and splits the wall time by operator family (self time of every torch operator, grouped by name:
matmuls, attention, elementwise (RMSNorm, RoPE, SiLU, residuals, LoRA scaling), casts/copies/gathers, the loss,
the optimizer's ops, embedding), the rest being Python, data preparation and model loading outside torch
operators. The concurrent path also labels its phases (``oppu.collate/forward/loss/backward/optimizer``,
``record_function`` in trainers/concurrent.py); the reference's optimizer is torch's own ``Optimizer.step`` label.
Profiling adds overhead to small operators, so shares matter here, not absolute times. Prints tables and writes
``bench/results/profile_step.json``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _report import save_report  # noqa: E402
from train_users import MODES, workload  # noqa: E402

from oppu_hub.models import resolve_base  # noqa: E402
from oppu_hub.tasks import get_task  # noqa: E402
from trainers import UserAdapterConfig, train_users  # noqa: E402
from trainers.common import set_threads  # noqa: E402

FAMILIES = [  # (family, operator-name pattern), first match wins
    ("matmul", r"aten::(mm|addmm|bmm|matmul|linear|baddbmm|addmv|mv|dot)$"),
    ("attention", r"aten::(_?scaled_dot_product.*|_flash_attention.*|_softmax.*|softmax.*)$"),
    ("loss / log-softmax", r"aten::(cross_entropy.*|nll_loss.*|_?log_softmax.*)$"),
    ("optimizer ops", r"aten::(_foreach_.*|addcdiv_|addcmul_|lerp_|sqrt)$"),
    ("embedding", r"aten::(embedding.*)$"),
    ("casts / copies / gathers", r"aten::(to|_to_copy|copy_|clone|contiguous|index_select|index|gather|cat|"
                                 r"index_put_|index_add_|scatter.*|masked_.*|nonzero|full|zeros.*|empty.*|fill_|"
                                 r"zero_)$"),
    ("elementwise (norm, RoPE, SiLU, residual)", r"aten::.*"),
]
PHASES = re.compile(r"oppu\.\w+|Optimizer\.step#.*|Optimizer\.zero_grad#.*")


def family(name: str) -> str | None:
    return next((f for f, pattern in FAMILIES if re.match(pattern, name)), None)


def breakdown(prof, wall_s: float) -> dict:
    """Seconds by operator family (self time), phase labels (total time) and what is outside torch ops."""
    families: dict[str, float] = {}
    phases: dict[str, float] = {}
    for event in prof.key_averages():
        if PHASES.fullmatch(event.key):
            phases[event.key.split("#")[0]] = event.cpu_time_total / 1e6
        elif (f := family(event.key)) is not None:
            families[f] = families.get(f, 0.0) + event.self_cpu_time_total / 1e6
    families["outside torch ops (python, data, loading)"] = max(0.0, wall_s - sum(families.values()))
    return {"wall_s": round(wall_s, 1), "families": {k: round(v, 2) for k, v in families.items()},
            "phases": {k: round(v, 2) for k, v in sorted(phases.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/bench-data")
    parser.add_argument("--task", default="LaMP-2N")
    parser.add_argument("--base", default="SmolLM2-135M-Instruct")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--history", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["reference", "concurrent"])
    parser.add_argument("--out", default=str(REPO / "bench/results/profile_step.json"))
    args = parser.parse_args()
    set_threads()
    common = workload(args.data_dir, get_task(args.task), resolve_base(args.base), args.users, args.history,
                      args.epochs)
    scratch = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    results = {}
    for mode in args.modes:
        config = UserAdapterConfig(**common, **MODES[mode], output_dir=str(scratch / mode))
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_users(config)
        results[mode] = breakdown(prof, time.perf_counter() - start)
        print(mode, results[mode], flush=True)
    names = list(dict.fromkeys(f for r in results.values() for f in r["families"]))
    print("\n| operator family | " + " | ".join(f"{m} s | {m} share" for m in results) + " |")
    print("|---|" + "---|---|" * len(results))
    for name in names:
        cells = [(r["families"].get(name, 0.0), r["families"].get(name, 0.0) / r["wall_s"]) for r in results.values()]
        print(f"| {name} | " + " | ".join(f"{s:.1f} | {f:.0%}" for s, f in cells) + " |")
    print("| wall | " + " | ".join(f"{r['wall_s']} | 100%" for r in results.values()) + " |")
    for mode, r in results.items():
        print(f"{mode} phases (s, total time incl. children): {r['phases']}")
    save_report(args.out, users=common["users"], history=args.history, epochs=args.epochs, results=results)


if __name__ == "__main__":
    main()
