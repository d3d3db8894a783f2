"""What every benchmark's JSON carries besides its results: when, where and how it was run."""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch


def save_report(path: str | Path, **payload: Any) -> Path:
    """Write ``payload`` to ``path`` as JSON, with the date, machine, torch threads and command line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(date=dt.datetime.now().isoformat(timespec="seconds"),
                machine=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
                command=" ".join(sys.argv))
    path.write_text(json.dumps({**meta, **payload}, indent=2))
    return path
