"""What every benchmark's JSON carries besides its results: when, where and how it was run."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import torch

from oppu_hub.evaluation import machine

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_flags() -> list[str]:
    """The matmul-relevant instruction-set flags of this CPU (from ``/proc/cpuinfo``)."""
    path = Path("/proc/cpuinfo")
    words = set(path.read_text().split()) if path.exists() else set()
    return [f for f in FLAGS if f in words]


def save_report(path: str | Path, **payload: Any) -> Path:
    """Write ``payload`` to ``path`` as JSON, with the date, machine, CPU flags, torch threads, the GPU and CUDA
    version (where there is one) and the command line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(date=dt.datetime.now().isoformat(timespec="seconds"), machine=machine(), cpu_flags=cpu_flags(),
                threads=torch.get_num_threads(), torch=torch.__version__, command=" ".join(sys.argv))
    if torch.cuda.is_available():
        meta.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    path.write_text(json.dumps({**meta, **payload}, indent=2))
    return path
