"""``oppu-hub space``: serve the Gradio comparison app of ``space/app.py`` (flags: its ``SpaceConfig``).

``space/`` is the Hugging Face Space folder, not part of the installed package, so the app is loaded by path
from the repository (or from ``$OPPU_HUB_SPACE_APP``). Loading it is cheap: it imports gradio and torch only
when launched.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from . import add_command, config_from_args

APP_ENV = "OPPU_HUB_SPACE_APP"
MODULE_NAME = "oppu_hub_space_app"


def app_path() -> Path:
    return Path(os.environ.get(APP_ENV) or Path(__file__).resolve().parents[2] / "space" / "app.py")


def load_app() -> ModuleType:
    """The ``space/app.py`` module (loaded once)."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    path = app_path()
    if not path.is_file():
        raise FileNotFoundError(f"no Space app at {path}; run from an oppu-hub checkout or set {APP_ENV}")
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module  # dataclasses look their module up while the class is created
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODULE_NAME]
        raise
    return module


def register(subparsers: Any) -> None:
    try:
        config_cls = load_app().SpaceConfig
    except (OSError, ImportError, SyntaxError):  # an installed copy without the space/ folder
        subparsers.add_parser("space", help="serve the comparison app (needs space/app.py)").set_defaults(func=_space)
        return
    add_command(subparsers, "space", _space, "serve the Gradio app comparing base, RAG, OPPU and OPPU + RAG, where "
                "visitors also make, compare and delete their own adapter", config_cls)


def _space(args: argparse.Namespace) -> int:
    module = load_app()
    module.main(config_from_args(module.SpaceConfig, args))
    return 0
