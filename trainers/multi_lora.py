"""Many LoRA adapters in one model: every adapted linear layer holds the adapters of ``N`` slots stacked, and each
row of a batch uses its own slot's adapter (a per-row gather, as Punica/S-LoRA's BGMV kernels do), so the frozen
base's matmuls run once for rows of many users. The layer (:class:`MultiLoraLinear`), the routing of rows to slots
(:class:`Route`), the surgery that puts such layers into a model (:func:`multi_lora`) and the mapping of a slot to
peft's saved keys (:func:`slot_weights`). Concurrent training (:mod:`trainers.concurrent`) and mixed-batch serving
(:mod:`oppu_hub.lora_bank`) share it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn


class Route:
    """Which slot each row of the current batch belongs to (shared by all wrapped layers; ``None``: no adapter)."""

    slots: torch.Tensor | None = None


class MultiLoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``N`` LoRA adapters; row ``i`` of the input uses adapter ``route.slots[i]``.

    ``A``: ``(N, r, in)``, ``B``: ``(N, out, r)``; output ``base(x) + scale * (dropout(x) @ A_s^T) @ B_s^T``, the
    same as peft's ``lora.Linear`` for the adapter of that row.
    """

    def __init__(self, base: nn.Linear, slots: int, r: int, scale: float, dropout: float, route: Route) -> None:
        super().__init__()
        self.base = base
        self.scale = scale
        self.dropout = dropout
        self.route = route
        self.A = nn.Parameter(torch.zeros(slots, r, base.in_features))
        self.B = nn.Parameter(torch.zeros(slots, base.out_features, r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        slots = self.route.slots
        if slots is None:
            return out
        h = F.dropout(x, self.dropout, self.training) if self.dropout else x
        # Training (bf16 autocast) runs in the input's dtype; inference in the adapters' dtype, as peft's LoRA does.
        dtype = h.dtype if self.training else self.A.dtype
        a = self.A.index_select(0, slots).to(dtype)  # (rows, r, in)
        b = self.B.index_select(0, slots).to(dtype)  # (rows, out, r)
        delta = torch.bmm(torch.bmm(h.to(dtype), a.transpose(1, 2)), b.transpose(1, 2))
        return out + (delta * self.scale if self.scale != 1 else delta).to(out.dtype)


@contextlib.contextmanager
def multi_lora(model: nn.Module, ranks: Mapping[str, int], slots: int, scale: float, dropout: float, route: Route,
               device: torch.device) -> Iterator[dict[str, MultiLoraLinear]]:
    """Replace each linear module of ``model`` named in ``ranks`` (its LoRA rank) by a :class:`MultiLoraLinear` of
    ``slots`` zero adapters on ``device``, routed by ``route``; yields the layers by module name. On exit the
    original modules are back, the yielded dict is emptied and ``route`` is cleared."""
    layers: dict[str, MultiLoraLinear] = {}
    originals: dict[str, nn.Module] = {}
    try:
        for name, r in ranks.items():
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            base = getattr(parent, child)
            layer = MultiLoraLinear(base, slots, r, scale, dropout, route).to(device)
            originals[name] = base
            setattr(parent, child, layer)
            layers[name] = layer
        yield layers
    finally:
        for name, base in originals.items():
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, base)
        layers.clear()
        route.slots = None


def lora_matrices(layers: Mapping[str, MultiLoraLinear]) -> Iterator[tuple[str, str, nn.Parameter]]:
    """``(module name, "A" or "B", stacked parameter)`` of every LoRA matrix of ``layers``."""
    for name, layer in layers.items():
        yield name, "A", layer.A
        yield name, "B", layer.B


def lora_key(module: str, part: str) -> str:
    """The key under which peft saves LoRA matrix ``part`` (``A`` or ``B``) of ``module``."""
    return f"base_model.model.{module}.lora_{part}.weight"


def slot_weights(layers: Mapping[str, MultiLoraLinear], s: int) -> dict[str, torch.Tensor]:
    """Slot ``s``'s LoRA weights under peft's key names (:func:`lora_key`), copied to the CPU: the
    ``adapter_model.safetensors`` of a standard peft adapter folder."""
    return {lora_key(name, part): p[s].detach().to("cpu", copy=True).contiguous()
            for name, part, p in lora_matrices(layers)}
