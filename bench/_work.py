"""The honest work model of per-user LoRA training on a frozen base, and the matmul peak it is measured against.

Per training row of ``T`` tokens, ``S`` of them supervised (positions whose next token carries a label), with
``P`` the parameters of the decoder's linear layers, ``V x d`` the (tied) LM head and ``L`` decoder layers:

* forward: ``2 P T`` (every linear layer) + ``2 V d S`` (the LM head is needed only where a loss is taken) +
  ``2 L d T^2`` (causal attention: ``Q K^T`` and ``A V`` over the lower triangle);
* backward: ``2 P T`` (activation gradients; the frozen base has no weight gradients) + ``2 V d S`` +
  ``4 L d T^2`` (attention's gradients with respect to Q, K and V);
* LoRA: each adapted ``in x out`` layer adds ``2 r (in + out) T`` forward, the same for its input gradients and
  the same again for its weight gradients.

Every mode is credited with this same work, so GFLOP/s ratios are speed ratios; work a mode does beyond it
(logits at prompt positions, padding) is overhead, not credit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from trainers.rows import IGNORE


def model_shape(model: nn.Module, targets: Sequence[str] | str, r: int) -> dict[str, int]:
    """``P`` (decoder linear weights), ``V``, ``d``, ``L``, the per-token LoRA width ``sum r (in + out)`` and the
    distinct ``(in, out)`` shapes of the decoder's linear layers."""
    head = model.get_output_embeddings()
    decoder = getattr(model, model.base_model_prefix)
    linears = [(n, m) for n, m in decoder.named_modules() if isinstance(m, nn.Linear)]
    adapted = [m for n, m in linears
               if targets == "all-linear" or n.rsplit(".", 1)[-1] in set(targets)]
    return dict(P=sum(m.weight.numel() for _, m in linears), V=head.weight.shape[0], d=head.weight.shape[1],
                L=model.config.num_hidden_layers, lora=sum(r * (m.in_features + m.out_features) for m in adapted),
                shapes=sorted({(m.in_features, m.out_features) for _, m in linears}))


def training_flops(shape: dict[str, int], rows: Sequence[Any], epochs: float) -> dict[str, float]:
    """The work of training on ``rows`` (``trainers.rows.Row``: ``input_ids`` and ``labels``) for ``epochs``,
    by component (see the module docstring); ``total`` is their sum."""
    P, V, d, L, lora = (shape[k] for k in ("P", "V", "d", "L", "lora"))
    T = sum(len(r.input_ids) for r in rows)
    S = sum(sum(t != IGNORE for t in r.labels[1:]) for r in rows)
    T2 = sum(len(r.input_ids) ** 2 for r in rows)
    parts = {"linear fwd+bwd": 4 * P * T, "lm head fwd+bwd (supervised)": 4 * V * d * S,
             "attention fwd+bwd": 6 * L * d * T2, "lora fwd+bwd+grads": 6 * lora * T}
    parts = {k: v * epochs for k, v in parts.items()}
    return {**parts, "total": sum(parts.values()), "tokens": T * epochs, "supervised": S * epochs}


def matmul_peak(dtype: torch.dtype, shape: dict[str, Any], tokens: int | None = None,
                seconds: float = 1.0, device: str = "cpu") -> dict[str, float]:
    """GFLOP/s of ``x @ W^T`` (``tokens`` rows: default 1,024 on a CPU, 16,384 on a GPU, the concurrent trainer's
    micro-batch there) at each linear shape of the model and at the LM head, on ``device``."""
    tokens = tokens or (16384 if device.startswith("cuda") else 1024)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = {}
    for k, n in [*shape["shapes"], (shape["d"], shape["V"])]:
        name = f"{k}x{n}"
        x, w = (torch.randn(tokens, k, dtype=dtype, device=device), torch.randn(n, k, dtype=dtype, device=device))
        for _ in range(3):
            x @ w.T
        sync()
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(10):
                x @ w.T
            sync()
            reps += 10
        out[name] = 2 * tokens * k * n * reps / (time.perf_counter() - start) / 1e9
    return out
