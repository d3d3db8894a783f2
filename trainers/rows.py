"""Training rows of the concurrent loop (:mod:`trainers.concurrent`), prepared as ``SFTTrainer`` prepares them:
tokenised (EOS appended, completion-only labels, ``max_length`` truncation keeping the start, fully masked rows
dropped), planned into each user's optimizer steps (its own seeded permutation per epoch, independent of the other
users and of timing), and a step's rows cut into padded micro-batches of similar length."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .common import optimizer_steps
from .training_config import TrainingConfig

IGNORE = -100  # the label of a token without loss


@dataclass
class Row:
    """One tokenized training example: ids and labels (``-100`` where there is no loss)."""

    input_ids: list[int]
    labels: list[int]


def tokenize_rows(rows: Sequence[Mapping[str, str]], tokenizer: Any, max_length: int | None) -> list[Row]:
    """Tokenize ``{"prompt", "completion"}`` / ``{"text"}`` rows exactly as ``SFTTrainer`` prepares them."""
    eos = tokenizer.eos_token
    out = []
    for row in rows:
        if "prompt" in row:
            completion = row["completion"] if row["completion"].endswith(eos) else row["completion"] + eos
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            ids = tokenizer(row["prompt"] + completion)["input_ids"]
            n = 0
            for a, b in zip(prompt_ids, ids, strict=False):
                if a != b:
                    break
                n += 1
            labels = [IGNORE] * n + ids[n:]
        else:
            text = row["text"] if row["text"].endswith(eos) else row["text"] + eos
            ids = tokenizer(text)["input_ids"]
            labels = list(ids)
        if max_length is not None:
            ids, labels = ids[:max_length], labels[:max_length]
        if any(t != IGNORE for t in labels[1:]):  # no label after the shift: no loss (SFTTrainer drops it too)
            out.append(Row(list(ids), labels))
    return out


def batch_plan(config: TrainingConfig, n_rows: int) -> list[list[int]]:
    """The row indices of each optimizer step: a fresh seeded permutation per epoch cut into steps of
    ``per_device_train_batch_size * gradient_accumulation_steps`` rows, :func:`trainers.common.optimizer_steps`
    steps in all (as ``Trainer`` counts them)."""
    size = config.per_device_train_batch_size * config.gradient_accumulation_steps
    total = optimizer_steps(config, n_rows)
    gen = torch.Generator().manual_seed(config.seed)
    plan: list[list[int]] = []
    while len(plan) < total:
        perm = torch.randperm(n_rows, generator=gen).tolist()
        plan += [perm[i:i + size] for i in range(0, n_rows, size)]
    return plan[:total]


def micro_batches(rows: Sequence[Row], max_tokens: int) -> list[list[int]]:
    """The indices of ``rows`` sorted by length and cut into micro-batches of at most ``max_tokens`` padded tokens
    (a longer row alone): little padding, bounded memory."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
    micro: list[list[int]] = [[]]
    for i in order:
        length = len(rows[i].input_ids)
        if micro[-1] and length * (len(micro[-1]) + 1) > max_tokens:
            micro.append([])
        micro[-1].append(i)
    return micro


def collate(rows: Sequence[Row], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rows`` right-padded to one width: input ids (``pad``), labels (:data:`IGNORE`) and the attention mask."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, :len(r.input_ids)] = torch.tensor(r.input_ids)
        labels[j, :len(r.labels)] = torch.tensor(r.labels)
        mask[j, :len(r.input_ids)] = 1
    return ids, labels, mask
