"""``oppu-hub demo``: the whole OPPU pipeline on the embedded defaults, ending in a results table."""

from __future__ import annotations

import argparse
from typing import Any

from ..demo_config import DemoConfig
from . import add_command, config_from_args


def register(subparsers: Any) -> None:
    add_command(subparsers, "demo", _demo, "build data, train bases and user adapters, compare methods with "
                                          "baselines and bootstrap intervals", DemoConfig)


def _demo(args: argparse.Namespace) -> int:
    from ..demo import format_demo, run_demo  # torch: loaded when the demo runs, not when the CLI is built

    config = config_from_args(DemoConfig, args)
    print(format_demo(config, *run_demo(config)))
    return 0
