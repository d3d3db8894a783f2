"""The ``oppu-hub`` command line: one module per command group, each flag mapped one-to-one onto a field of
the dataclass config it fills (``transformers.HfArgumentParser``), so flags and configs never drift apart."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from typing import Any, TypeVar

from transformers import HfArgumentParser

from .. import __version__

# Modules of this package that define ``register(subparsers)``.
COMMAND_MODULES = ("data", "train", "predict", "hub", "demo", "space", "evaluation")

T = TypeVar("T")


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build the dataclass ``cls`` from the parsed flags of its fields."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def add_command(subparsers: Any, name: str, func: Any, help: str, *configs: type) -> HfArgumentParser:
    """Add a subcommand whose flags are the fields of ``configs``; ``func(args)`` runs it."""
    parser = subparsers.add_parser(name, dataclass_types=list(configs), help=help, description=help)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oppu-hub", description="One PEFT Per User: per-user adapters on a shared base, evaluated on LaMP.")
    parser.add_argument("--version", action="version", version=f"oppu-hub {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (set OPPU_HUB_DEBUG=1 for tracebacks)")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        if os.environ.get("OPPU_HUB_DEBUG"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # str(KeyError) adds quotes
        print(f"oppu-hub {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"oppu-hub {args.command}: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Keep our own progress bars; drop the libraries' per-load bars and deprecation chatter."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", category=UserWarning, module="trl")


if __name__ == "__main__":
    sys.exit(main())
