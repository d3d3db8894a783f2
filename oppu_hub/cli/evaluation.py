"""``oppu-hub eval`` (the leaderboard, the paper's Table 2) and ``oppu-hub analyze NAME`` (its analyses)."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_command, config_from_args


def register(subparsers: Any) -> None:
    from ..analyses import ANALYSES
    from ..evaluation import EvalConfig

    add_command(subparsers, "eval", _eval,
                "run methods (model-free baselines, the paper's Table 2, the pooled-adapter control) on the test "
                "users of LaMP tasks and print/write a Table-2 style leaderboard with n and paired bootstrap 95%% "
                "intervals over users", EvalConfig)
    analyze = subparsers.add_parser("analyze", help="the paper's analyses: each writes a PNG plot and a table",
                                    description="the paper's analyses: each writes a PNG plot and a table")
    names = analyze.add_subparsers(dest="analysis", required=True, parser_class=type(analyze))
    for name, (config_cls, _, help_text) in ANALYSES.items():
        add_command(names, name, _analyze, help_text, config_cls).set_defaults(analysis=name)


def _eval(args: argparse.Namespace) -> int:
    from ..evaluation import EvalConfig, format_markdown, run_eval

    table, paths, _ = run_eval(config_from_args(EvalConfig, args))
    print(format_markdown(table))
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from ..analyses import ANALYSES

    config_cls, func, _ = ANALYSES[args.analysis]
    result = func(config_from_args(config_cls, args))
    print(result["markdown"])
    print(f"written: {result['png']}, {result['table']}")
    return 0
