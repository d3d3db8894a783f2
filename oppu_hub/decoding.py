"""Contrastive personal decoding (CoPe-style; method ``oppu-cd-kN``): at each step the next token maximises
``log p_user(t) - alpha * log p_base(t)`` among the tokens the personal model finds plausible
(``p_user(t) >= beta * max p_user``), so what the user's adapter adds over the base is amplified.

Both models run in one mixed-adapter batch: every prompt twice, once with the user's adapter and once with none.
:class:`ContrastiveLogitsProcessor` gives both rows of a pair the same contrasted scores, so greedy decoding takes
the same token in both and the pair stays in step. ``alpha = 0`` is plain greedy decoding of the personal model.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


def contrast(user_logits: torch.Tensor, base_logits: torch.Tensor, alpha: float, beta: float = 0.1) -> torch.Tensor:
    """Contrasted next-token scores: ``log p_user - alpha * log p_base`` where ``p_user >= beta * max p_user``,
    ``-inf`` elsewhere (the plausibility mask keeps the contrast from promoting tokens the user model rejects)."""
    user, base = user_logits.float().log_softmax(-1), base_logits.float().log_softmax(-1)
    plausible = user >= user.max(-1, keepdim=True).values + torch.log(torch.tensor(beta))
    return torch.where(plausible, user - alpha * base, torch.tensor(float("-inf"), device=user.device))


class ContrastiveLogitsProcessor(LogitsProcessor):
    """For a batch whose first ``n`` rows carry users' adapters and last ``n`` rows the same prompts on the base:
    both halves get :func:`contrast` of the pair."""

    def __init__(self, n: int, alpha: float, beta: float = 0.1) -> None:
        self.n, self.alpha, self.beta = n, alpha, beta

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        contrasted = contrast(scores[:self.n], scores[self.n:], self.alpha, self.beta)
        return torch.cat([contrasted, contrasted])
