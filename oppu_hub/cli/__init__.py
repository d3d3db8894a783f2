"""The ``oppu-hub`` command line: one module per command group, each flag mapped one-to-one onto a field of
the dataclass config it fills (``transformers.HfArgumentParser``; a config held by a config, such as ``eval``'s
``--base.*`` and ``--user.*``, through :class:`ConfigParser`), so flags and configs never drift apart."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
import warnings
from typing import Any, TypeVar, get_type_hints

from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from .. import __version__

# Modules of this package that define ``register(subparsers)``.
COMMAND_MODULES = ("data", "train", "predict", "hub", "demo", "space", "evaluation")

T = TypeVar("T")


def nested_configs(cls: type) -> dict[str, type]:
    """The fields of the dataclass ``cls`` that hold a dataclass (a nested config): ``{field name: its type}``."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])}


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build the dataclass ``cls`` from the parsed flags of its fields. A nested config is its field's default
    instance with the shared flags given (``cls.shared_flags``), then its own ``--{field}.{name}`` flags given,
    replaced in (:class:`ConfigParser`)."""
    nested = nested_configs(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in nested:
            template = f.default_factory()
            given = {name: getattr(args, name) for name in getattr(cls, "shared_flags", ())
                     if hasattr(args, name) and hasattr(template, name)}
            given.update({sub.name: getattr(args, f"{f.name}.{sub.name}") for sub in dataclasses.fields(template)
                          if hasattr(args, f"{f.name}.{sub.name}")})
            values[f.name] = dataclasses.replace(template, **given)
        elif hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return cls(**values)


class _Recorder:
    """Stands in for a parser to catch the ``add_argument`` calls ``HfArgumentParser`` makes for one field."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def add_argument(self, *names: str, **kwargs: Any) -> None:
        self.calls.append((names, kwargs))


class ConfigParser(HfArgumentParser):
    """``HfArgumentParser`` for configs that hold configs (``EvalConfig.base: BaseTaskConfig``): a field whose type
    is a dataclass gets one flag ``--{field}.{name}`` per field of that dataclass, typed and documented as there,
    defaulting to the field's default instance, except the names its metadata lists under ``no_flags`` (filled in
    by the code that uses it); its metadata's ``unset`` says, per name, what a ``None`` default means. Each name in
    the config's ``shared_flags`` also gets a flag ``--{name}`` that sets it in every nested config (a nested
    config's own flag wins). :func:`config_from_args` builds the config."""

    def _add_dataclass_arguments(self, dtype: Any) -> None:
        nested = nested_configs(dtype)
        if not nested:
            super()._add_dataclass_arguments(dtype)
            return
        hints = get_type_hints(dtype)
        flagged: dict[str, tuple[Any, dict[str, dataclasses.Field], dict[str, Any]]] = {}
        for f in dataclasses.fields(dtype):
            if f.name not in nested:
                if f.init:
                    f.type = hints[f.name]
                    self._parse_dataclass_field(self, f)
                continue
            template, types = f.default_factory(), get_type_hints(nested[f.name])
            no_flags = f.metadata.get("no_flags", ())
            subs = {sub.name: sub for sub in dataclasses.fields(template) if sub.init and sub.name not in no_flags}
            group = self.add_argument_group(f"--{f.name}.*", f.metadata.get("help"))
            for name, sub in subs.items():
                value = getattr(template, name)
                shown = f.metadata.get("unset", {}).get(name, value) if value is None else value
                self._add_flag(group, f"{f.name}.{name}", sub, types[name], value, f"default: {shown}")
            flagged[f.name] = (template, subs, types)
        for name in getattr(dtype, "shared_flags", ()):
            holders = [h for h, (_, subs, _) in flagged.items() if name in subs]
            _, subs, types = flagged[holders[0]]
            defaults = [getattr(flagged[h][0], name) for h in holders]
            shown = defaults[0] if defaults.count(defaults[0]) == len(defaults) else ", ".join(
                f"{h} {v}" for h, v in zip(holders, defaults, strict=True))
            overrides = " / ".join(f"--{h}.{name}" for h in holders)
            self._add_flag(self, name, subs[name], types[name], None,
                           f"for every stage, {overrides} override it; default: {shown}")

    def _add_flag(self, parser: Any, name: str, sub: dataclasses.Field, type_: Any, value: Any, note: str) -> None:
        """Add the flag(s) ``HfArgumentParser`` makes for ``sub`` under the name ``name``, with no default of their
        own (a flag not given is absent from the parsed namespace) and ``note`` after the help text."""
        flag = dataclasses.field(default=value, metadata=sub.metadata)
        flag.name, flag.type = name, type_
        recorder = _Recorder()
        self._parse_dataclass_field(recorder, flag)
        for names, kwargs in recorder.calls:
            kwargs.pop("required", None)
            kwargs["default"] = argparse.SUPPRESS
            if kwargs.get("action") != "store_false":
                kwargs["help"] = f"{kwargs.get('help', '')} ({note})"
            parser.add_argument(*names, **kwargs)

    def parse_args_into_dataclasses(self, args: list[str] | None = None) -> tuple[Any, ...]:
        """The configs of ``dataclass_types`` from ``args`` (default ``sys.argv``), built by
        :func:`config_from_args`."""
        namespace = self.parse_args(args)
        return tuple(config_from_args(dtype, namespace) for dtype in self.dataclass_types)


def add_command(subparsers: Any, name: str, func: Any, help: str, *configs: type) -> ConfigParser:
    """Add a subcommand whose flags are the fields of ``configs``; ``func(args)`` runs it."""
    parser = subparsers.add_parser(name, dataclass_types=list(configs), help=help, description=help)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oppu-hub", description="One PEFT Per User: per-user adapters on a shared base, evaluated on LaMP.")
    parser.add_argument("--version", action="version", version=f"oppu-hub {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (set OPPU_HUB_DEBUG=1 for tracebacks)")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=ConfigParser)
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
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", category=UserWarning, module="trl")


if __name__ == "__main__":
    sys.exit(main())
