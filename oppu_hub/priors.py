"""A calibrated user prior over a task's labels (baseline ``prior-np-kN``, and ``oppu-prior-kN`` on top of an
adapter): the model's label scores plus the user's smoothed label log-prior minus the global one,

    score(y) = log P_model(y | x) + weight * (log p_user(y) - log p_global(y)),
    p_user(y) = (count_user(y) + smoothing * p_global(y)) / (n_user + smoothing),

with ``p_global`` the training users' label frequencies (add-one smoothed). ``weight`` and ``smoothing`` are chosen
on dev. With ``weight = 0`` it is the model alone; a user whose history matches the global frequencies is
unaffected whatever the weight.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import torch


def global_prior(labels: Sequence[str], observed: Iterable[str]) -> list[float]:
    """Add-one smoothed frequencies of ``labels`` among ``observed`` answers (others ignored)."""
    counts = Counter(a for a in observed if a in labels)
    total = sum(counts.values()) + len(labels)
    return [(counts[y] + 1) / total for y in labels]


def user_prior(labels: Sequence[str], history: Iterable[str], prior: Sequence[float], smoothing: float) -> list[float]:
    """The user's label frequencies, smoothed towards ``prior`` with ``smoothing`` pseudo-counts."""
    counts = Counter(a for a in history if a in labels)
    n = sum(counts.values())
    return [(counts[y] + smoothing * p) / (n + smoothing) for y, p in zip(labels, prior, strict=True)]


def calibrated(scores: torch.Tensor, user_priors: Sequence[Sequence[float]], prior: Sequence[float],
               weight: float) -> torch.Tensor:
    """``scores`` (rows x labels, log-likelihoods) shifted by each row's user log-prior ratio times ``weight``."""
    ratio = torch.tensor([[math.log(u) - math.log(g) for u, g in zip(row, prior, strict=True)]
                          for row in user_priors], dtype=scores.dtype, device=scores.device)
    return scores + weight * ratio
