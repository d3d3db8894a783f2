"""``oppu-hub space``: serve the comparison page of ``space/app.py`` (flags: :class:`~oppu_hub.compare_config.
SpaceConfig`, read without loading the page).

``space/`` is the Hugging Face Space folder, not part of the installed package, so the page is loaded by path from
the repository (or from ``$OPPU_HUB_SPACE_APP``); everything it runs is in the library (:mod:`oppu_hub.compare`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ..compare_config import SpaceConfig
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
    add_command(subparsers, "space", _space, "serve the Gradio app comparing base, RAG, OPPU and OPPU + RAG, where "
                "visitors also make, compare and delete their own adapter", SpaceConfig)


def _space(args: argparse.Namespace) -> int:
    load_app().main(config_from_args(SpaceConfig, args))
    return 0
