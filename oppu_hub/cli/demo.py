"""``oppu-hub demo``: the whole OPPU pipeline on the embedded defaults, ending in a results table."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_command, config_from_args


def register(subparsers: Any) -> None:
    from ..demo import DemoConfig

    add_command(subparsers, "demo", _demo, "build data, train base and user adapters, compare methods", DemoConfig)


def _demo(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, format_results, run_demo

    print(format_results(run_demo(config_from_args(DemoConfig, args))))
    return 0
