"""``oppu-hub data build`` (LaMP tasks from the real public sources) and ``oppu-hub data validate``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from ..builders import BuildConfig, build, format_summary
from ..data import load_split
from . import add_command, config_from_args


@dataclass
class ValidateConfig:
    """Check a LaMP-format questions file (and its outputs file) and print what it holds."""

    questions: str = field(metadata={"help": "a *_questions.json file"})
    outputs: str | None = field(default=None, metadata={"help": "its *_outputs.json file"})
    task: str | None = field(default=None, metadata={"help": "task name (default: read from the files)"})


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("data", help="build or validate LaMP-format data")
    sub = parser.add_subparsers(dest="data_command", required=True, parser_class=type(parser))
    add_command(sub, "build", _build, "rebuild LaMP-format tasks from the public source data", BuildConfig)
    add_command(sub, "validate", _validate, "validate LaMP-format files and print a summary", ValidateConfig)


def _build(args: argparse.Namespace) -> int:
    manifests = build(config_from_args(BuildConfig, args))
    print(format_summary(manifests))
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = config_from_args(ValidateConfig, args)
    split = load_split(config.questions, config.outputs, config.task)
    lengths = [len(q.profile) for q in split.questions]
    print(f"{split.task.name}: {len(split.questions)} questions, {len(split.user_ids)} users, "
          f"history length mean {sum(lengths) / len(lengths):.1f} (min {min(lengths)}, max {max(lengths)}), "
          f"golds {'present' if split.has_golds else 'absent'}")
    return 0
