"""Serving many users' LoRA adapters from one base in mixed batches with a gathered multi-LoRA layer.

peft runs a mixed batch (``adapter_names``) by looping, in every adapted layer, over the adapters present in the
batch: one sub-batch gather, two small matmuls and a scatter each. :class:`LoraBank` instead stacks the resident
adapters in the slots of :class:`trainers.multi_lora.MultiLoraLinear` (the layer concurrent training uses), so each
adapted layer runs the base matmul once and one gathered low-rank product for all rows, whatever their users. Slot 0
stays zero: the rows of the plain base (``None`` or :data:`BASE_ADAPTER`).

Adapters of different ranks, scales or target modules share the bank: a slot holds ``scale * B`` (so the layer's
scale is 1), padded with zeros to the largest rank, and a module an adapter does not target stays zero in its slot.
The LoRA product runs in the adapters' dtype (fp32), as peft's does, so outputs match peft's. What the layer cannot
express (DoRA, biases, ``modules_to_save``, per-module rank or alpha patterns, non-linear targets) is refused by
:func:`unsupported` with the reason, and such adapters are served by peft.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from trainers.multi_lora import MultiLoraLinear, Route, lora_key, multi_lora

from .io import read_json

BASE_ADAPTER = "__base__"  # the name of "no adapter" in a mixed batch (peft's, so callers need not know the backend)
WEIGHTS = "adapter_model.safetensors"
# adapter_config.json settings the gathered layer cannot express unless off (unset, false, empty or "none")
REFUSED = ("use_dora", "lora_bias", "bias", "fan_in_fan_out", "modules_to_save", "rank_pattern", "alpha_pattern",
           "layer_replication", "trainable_token_indices", "target_parameters")


def unsupported(folder: str | Path, model: nn.Module) -> str | None:
    """Why the LoRA adapter in ``folder`` cannot join a :class:`LoraBank` on ``model`` (``None``: it can)."""
    config = read_json(Path(folder) / "adapter_config.json")
    if config.get("peft_type") != "LORA":
        return f"a {config.get('peft_type')} adapter, not LoRA"
    for key in REFUSED:
        if config.get(key) and config.get(key) != "none":
            return f"{key}={config.get(key)!r}"
    modules = dict(model.named_modules())
    with safe_open(str(Path(folder) / WEIGHTS), "pt") as weights:  # the header only: add() reads the tensors
        keys = list(weights.keys())
    for key in keys:
        module, part = _split_key(key)
        if part is None:
            return f"weight {key} is not a LoRA A/B matrix"
        if not isinstance(modules.get(module), (nn.Linear, MultiLoraLinear)):  # a linear layer, maybe banked
            return f"{module} is not a linear layer of the base"
    return None


def _split_key(key: str) -> tuple[str, str | None]:
    """``(module, "A" or "B")`` of a peft LoRA key (:func:`~trainers.multi_lora.lora_key`); part ``None``
    otherwise."""
    for part in ("A", "B"):
        module = key.removeprefix("base_model.model.").removesuffix(f".lora_{part}.weight")
        if key == lora_key(module, part):
            return module, part
    return key, None


def scaled_weights(folder: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module: (A, scale * B)}`` of the LoRA adapter in ``folder`` (fp32, CPU)."""
    config = read_json(Path(folder) / "adapter_config.json")
    r, alpha = config["r"], config.get("lora_alpha", config["r"])
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    saved = load_file(str(Path(folder) / WEIGHTS))
    modules = {_split_key(k)[0] for k in saved}
    return {m: (saved[lora_key(m, "A")].float(), saved[lora_key(m, "B")].float() * scale) for m in sorted(modules)}


class LoraBank(nn.Module):
    """``model`` with up to ``capacity`` LoRA adapters resident in gathered multi-LoRA layers (see the module doc).

    Call it or its :meth:`generate` as the model, with ``adapter_names`` (one per row; ``None`` or
    :data:`BASE_ADAPTER`: the base) as peft's mixed batches take. :meth:`close` gives the model back as it came.
    """

    def __init__(self, model: nn.Module, capacity: int) -> None:
        super().__init__()
        self.model = model
        self.capacity = max(1, capacity)
        self.route = Route()
        self._slots: dict[str, int] = {}  # adapter name -> slot (1..capacity)
        self._weights: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}  # name -> scaled_weights
        self._layers: dict[str, MultiLoraLinear] = {}
        self._surgery = contextlib.ExitStack()

    @property
    def names(self) -> list[str]:
        return list(self._slots)

    def add(self, name: str, folder: str | Path) -> None:
        """Put the adapter in ``folder`` (checked by the caller: :func:`unsupported` is ``None``) under ``name``,
        replacing an adapter of that name; the bank must have a free slot."""
        weights = scaled_weights(folder)
        self.remove(name)
        if len(self._slots) >= self.capacity:
            raise ValueError(f"the bank holds {self.capacity} adapters; remove one first")
        self._weights[name] = weights
        self._slots[name] = min(set(range(1, self.capacity + 1)) - set(self._slots.values()))
        if any(m not in self._layers or a.shape[0] > self._layers[m].A.shape[1] for m, (a, _) in weights.items()):
            self._rebuild()
        else:
            self._write(name)

    def remove(self, name: str) -> None:
        """Drop ``name`` (if resident): its slot is zeroed and free again."""
        slot = self._slots.pop(name, None)
        self._weights.pop(name, None)
        if slot is not None:
            with torch.no_grad():
                for layer in self._layers.values():
                    layer.A[slot].zero_()
                    layer.B[slot].zero_()

    def close(self) -> None:
        """Remove every adapter and put the model's own linear layers back."""
        self._slots.clear()
        self._weights.clear()
        self._surgery.close()

    def _rebuild(self) -> None:
        """Wrap the model anew with layers of every resident adapter's modules at their largest rank."""
        self._surgery.close()
        ranks: dict[str, int] = {}
        for weights in self._weights.values():
            for module, (a, _) in weights.items():
                ranks[module] = max(ranks.get(module, 0), a.shape[0])
        device = next(self.model.parameters()).device
        self._layers = self._surgery.enter_context(
            multi_lora(self.model, ranks, self.capacity + 1, 1.0, 0.0, self.route, device))
        for name in self._slots:
            self._write(name)

    def _write(self, name: str) -> None:
        slot = self._slots[name]
        with torch.no_grad():
            for module, (a, b) in self._weights[name].items():
                layer = self._layers[module]
                layer.A[slot, :a.shape[0]].copy_(a)
                layer.B[slot, :, :b.shape[1]].copy_(b)

    @contextlib.contextmanager
    def _routed(self, adapter_names: Sequence[str | None] | None) -> Iterator[None]:
        """Route each row to its adapter's slot for one call (no names: every row on the base)."""
        if adapter_names is not None and self._layers:
            unknown = {n for n in adapter_names if n not in self._slots and n not in (None, BASE_ADAPTER)}
            if unknown:
                raise ValueError(f"adapters {sorted(unknown)} are not resident")
            slots = [self._slots.get(n, 0) if n is not None else 0 for n in adapter_names]
            self.route.slots = torch.tensor(slots, device=next(self.model.parameters()).device)
        try:
            yield
        finally:
            self.route.slots = None

    def forward(self, *args: Any, adapter_names: Sequence[str | None] | None = None, **kwargs: Any) -> Any:
        with self._routed(adapter_names):
            return self.model(*args, **kwargs)

    def generate(self, *args: Any, adapter_names: Sequence[str | None] | None = None, **kwargs: Any) -> Any:
        """``model.generate`` with row ``i`` on ``adapter_names[i]`` (greedy/sampling: the batch keeps its rows)."""
        with self._routed(adapter_names):
            return self.model.generate(*args, **kwargs)
