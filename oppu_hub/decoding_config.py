"""How answers are decoded, shared by ``predict``, ``eval`` and the Space (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Answers = Literal["generate", "labels"]


@dataclass
class DecodingOptions:
    """How an answer is decoded.

    Args:
        answers: ``generate`` (greedy generation, read as LaMP's official scoring reads it: the paper's protocol) or
            ``labels`` (each of a classification or rating task's labels scored as a continuation of the prompt:
            :mod:`oppu_hub.label_scoring`; generation tasks always generate).
        contrast_alpha / contrast_beta: contrastive personal decoding (:mod:`oppu_hub.decoding`): the weight of
            the base's log-probabilities subtracted from the personal model's, and the plausibility threshold;
            used by methods ``oppu-cd-kN`` (eval) and ``predict --contrastive``. ``contrast_alpha`` was chosen on
            dev users of LaMP-4 and LaMP-7 from 0.1 / 0.3 / 0.5 / 1 (``bench/decoding_dev.py``,
            ``bench/results/decoding_dev.json``), then ``contrast_beta`` at that alpha from 0.05 / 0.1 / 0.2 / 0.3
            (CoPe's 0.1 kept: no value changes a dev answer).
        prior_weight / prior_smoothing: the calibrated user prior on label scores (:mod:`oppu_hub.priors`): its
            weight and the pseudo-counts of the global prior in a user's; used by methods ``prior-np-kN`` and
            ``oppu-prior-kN`` (eval) and ``predict --prior``. ``prior_weight`` was chosen on LaMP-2N's dev users
            (``prior-np-k0``) from 0.25 / 0.5 / 1 / 2 by the same script, then ``prior_smoothing`` at that weight
            from 0.5 / 1 / 2 / 4 / 8 (2 kept: it ties 0.5-4).
    """

    answers: Answers = field(default="generate", metadata={"help": "generate | labels (score the task's labels)"})
    contrast_alpha: float = field(default=0.5, metadata={
        "help": "contrastive decoding: weight of the base's log-probabilities"})
    contrast_beta: float = field(default=0.1, metadata={"help": "contrastive decoding: plausibility threshold"})
    prior_weight: float = field(default=0.5, metadata={"help": "weight of the user's label log-prior ratio"})
    prior_smoothing: float = field(default=2.0, metadata={"help": "pseudo-counts of the global prior in a user's"})
