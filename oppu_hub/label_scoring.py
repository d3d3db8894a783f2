"""Label-scored answers (``--answers labels``) for tasks with a closed label set (LaMP-1, 2N, 2M; LaMP-3's
ratings): each label is scored as a continuation of the prompt, and the best one is the answer.

The score of label ``y`` for prompt ``x`` is its **summed** log-likelihood as the model was trained to answer:
``log P(" " + y + EOS | x)`` (:func:`oppu_hub.prompts.completion` plus the EOS token the trainer appends). The EOS
term keeps a label from winning by being a prefix of a longer one ("sports" inside "sports & fitness"); no length
normalisation is applied, so a label of more tokens pays for each of them, as in the model's own generation.

It takes two forward passes per batch of prompts and shares each prompt: the prompts run once with a KV cache, the
cache is repeated once per label, and all labels of all prompts run as one batch of label tokens on top of it. A
batch may mix users (``adapter_names``, repeated per label), as mixed-batch generation does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .prompts import completion


def label_token_ids(tokenizer: Any, labels: Sequence[str]) -> list[list[int]]:
    """Each label's answer tokens as the trainer sees them: ``" " + label`` then EOS."""
    return [tokenizer(completion(label), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            for label in labels]


@torch.inference_mode()
def label_logprobs(model: Any, tokenizer: Any, prompts: Sequence[str], labels: Sequence[str],
                   adapter_names: Sequence[str] | None = None) -> torch.Tensor:
    """``(len(prompts), len(labels))`` summed log-likelihoods of each label after each prompt (one batch: split
    long lists of prompts before calling). ``adapter_names[i]`` is row ``i``'s adapter in a mixed batch."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True).to(device)
    finally:
        tokenizer.padding_side = side
    kwargs = {"adapter_names": list(adapter_names)} if adapter_names is not None else {}
    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    first = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True,
                  logits_to_keep=1, **kwargs)
    n, m = len(prompts), len(labels)
    ids = label_token_ids(tokenizer, labels)
    width = max(len(t) for t in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    label_ids = torch.full((m, width), pad, dtype=torch.long, device=device)
    label_mask = torch.zeros((m, width), dtype=torch.long, device=device)
    for j, tokens in enumerate(ids):
        label_ids[j, :len(tokens)] = torch.tensor(tokens, device=device)
        label_mask[j, :len(tokens)] = 1
    cache = first.past_key_values
    cache.batch_repeat_interleave(m)
    rows = torch.arange(n, device=device).repeat_interleave(m)  # row r: prompt r // m, label r % m
    second = model(input_ids=label_ids.repeat(n, 1), past_key_values=cache,
                   attention_mask=torch.cat([mask[rows], label_mask.repeat(n, 1)], dim=1),
                   position_ids=mask.sum(-1)[rows, None] + torch.arange(width, device=device),
                   **({"adapter_names": [adapter_names[i] for i in rows.tolist()]} if kwargs else {}))
    # The first label token is predicted by the prompt's last position; token t > 0 by label position t - 1.
    logits = torch.cat([first.logits[rows], second.logits[:, :-1]], dim=1).float().log_softmax(-1)
    targets = label_ids.repeat(n, 1)
    token_logp = logits.gather(-1, targets[..., None])[..., 0] * label_mask.repeat(n, 1)
    return token_logp.sum(-1).view(n, m)


def best_labels(scores: torch.Tensor, labels: Sequence[str]) -> list[str]:
    """The best-scoring label of each row (the first on ties)."""
    return [labels[j] for j in scores.argmax(-1).tolist()]
