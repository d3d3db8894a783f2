"""AdamW over parameters stacked per slot (dim 0; :mod:`trainers.multi_lora`), each slot its own optimizer:
elementwise identical to ``torch.optim.AdamW`` with the Trainer's settings (betas 0.9/0.999, eps 1e-8, weight
decay 0), with a per-slot gradient-norm clipping (``max_grad_norm`` 1.0, as the Trainer), step count and learning
rate. A slot not active in a step does not change at all."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

MAX_GRAD_NORM = 1.0
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 0.0


class SlotAdamW:
    """AdamW of ``slots`` independent slots over ``params`` (each ``(slots, ...)``), its state on ``device``:
    the moments ``state[p]["m"]`` / ``state[p]["v"]`` (stacked as ``p``) and each slot's step count ``steps``."""

    def __init__(self, params: Sequence[nn.Parameter], slots: int, device: torch.device) -> None:
        self.params = list(params)
        self.state = {p: {"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p in self.params}
        self.steps = torch.zeros(slots, dtype=torch.long, device=device)
        self.device = device

    @torch.no_grad()
    def reset(self, s: int) -> None:
        """Fresh moments and step count for slot ``s`` (a new user in it)."""
        for p in self.params:
            self.state[p]["m"][s].zero_()
            self.state[p]["v"][s].zero_()
        self.steps[s] = 0

    @torch.no_grad()
    def step(self, active: torch.Tensor, lrs: torch.Tensor) -> None:
        """One AdamW step of the ``active`` slots (bool, per slot) at learning rates ``lrs`` (per slot), each slot's
        gradient clipped to norm :data:`MAX_GRAD_NORM`; the gradients are cleared."""
        active, lrs = active.to(self.device), lrs.to(self.device)  # built on the host by the loop
        sq = torch.zeros(len(self.steps), dtype=torch.float64, device=self.device)
        for p in self.params:
            if p.grad is not None:
                sq += p.grad.double().pow(2).flatten(1).sum(1)
        clip = (MAX_GRAD_NORM / (sq.sqrt() + 1e-6)).clamp(max=1.0).float()
        self.steps += active.long()
        t = self.steps.clamp(min=1).double()
        bc1 = (1 - BETAS[0] ** t).float()
        bc2_sqrt = (1 - BETAS[1] ** t).sqrt().float()
        step_size = (lrs / bc1) * active.float()
        for p in self.params:
            if p.grad is None:
                continue
            view = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad * clip.view(view)
            state = self.state[p]
            keep = active.view(view)
            m_new = state["m"] * BETAS[0] + g * (1 - BETAS[0])
            v_new = state["v"] * BETAS[1] + g * g * (1 - BETAS[1])
            state["m"] = torch.where(keep, m_new, state["m"])
            state["v"] = torch.where(keep, v_new, state["v"])
            if WEIGHT_DECAY:
                p.mul_(1 - (lrs * WEIGHT_DECAY * active.float()).view(view))
            denom = state["v"].sqrt() / bc2_sqrt.view(view) + EPS
            p.sub_(step_size.view(view) * state["m"] / denom)
            p.grad = None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
