"""``oppu-hub eval`` (the leaderboard, the paper's Table 2) and ``oppu-hub analyze NAME`` (its analyses)."""

from __future__ import annotations

import argparse
from typing import Any

from ..analyses_config import ANALYSES
from ..leaderboard import format_markdown
from ..pipeline_config import EvalConfig
from . import add_command, config_from_args


def register(subparsers: Any) -> None:
    add_command(subparsers, "eval", _eval,
                "run methods (model-free baselines, the paper's Table 2, the pooled-adapter control) on the test "
                "users of LaMP tasks and print/write a Table-2 style leaderboard with n and paired bootstrap 95%% "
                "intervals over users", EvalConfig)
    analyze = subparsers.add_parser("analyze", help="the paper's analyses: each writes a PNG plot and a table",
                                    description="the paper's analyses: each writes a PNG plot and a table")
    names = analyze.add_subparsers(dest="analysis", required=True, parser_class=type(analyze))
    for name, (config_cls, help_text) in ANALYSES.items():
        add_command(names, name, _analyze, help_text, config_cls).set_defaults(analysis=name)


def _eval(args: argparse.Namespace) -> int:
    from ..evaluation import run_eval  # torch: loaded when eval runs, not when the CLI is built

    table, paths, _ = run_eval(config_from_args(EvalConfig, args))
    print(format_markdown(table))
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from ..analyses import RUNNERS  # torch: loaded when an analysis runs, not when the CLI is built

    config_cls, _ = ANALYSES[args.analysis]
    result = RUNNERS[args.analysis](config_from_args(config_cls, args))
    print(result["markdown"])
    print(f"written: {result['png']}, {result['table']}")
    return 0
