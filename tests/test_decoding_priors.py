"""Contrastive personal decoding and the calibrated user prior on toy numbers computed by hand."""

import math

import torch

from oppu_hub.decoding import ContrastiveLogitsProcessor, contrast
from oppu_hub.priors import calibrated, global_prior, user_prior


def test_alpha_zero_is_plain_decoding_of_the_personal_model():
    torch.manual_seed(0)
    user, base = torch.randn(3, 50), torch.randn(3, 50)
    assert torch.equal(contrast(user, base, 0.0).argmax(-1), user.argmax(-1))


def test_the_contrast_changes_the_argmax_as_computed_by_hand():
    # p_user = (0.5, 0.4, 0.1), p_base = (0.8, 0.1, 0.1): plain greedy takes token 0; with alpha = 1
    # log(.5/.8) = -0.47 < log(.4/.1) = 1.39, so token 1; token 2 (p_user 0.1 < 0.25 * 0.5) is masked out.
    user = torch.log(torch.tensor([[0.5, 0.4, 0.1]]))
    base = torch.log(torch.tensor([[0.8, 0.1, 0.1]]))
    scores = contrast(user, base, alpha=1.0, beta=0.25)
    assert scores.argmax(-1).item() == 1 and math.isinf(scores[0, 2].item())
    assert abs(scores[0, 1].item() - math.log(4)) < 1e-5 and abs(scores[0, 0].item() - math.log(0.625)) < 1e-5
    # In a batch of [user rows; base rows] both halves get the pair's contrast, so greedy keeps them in step.
    both = ContrastiveLogitsProcessor(1, alpha=1.0, beta=0.25)(torch.zeros(2, 1, dtype=torch.long),
                                                                torch.cat([user, base]))
    assert torch.equal(both[0], scores[0]) and torch.equal(both[1], scores[0])


def test_the_calibrated_prior_picks_the_argmax_computed_by_hand():
    labels = ["a", "b", "c"]
    prior = global_prior(labels, ["a"] * 5 + ["b"] * 2 + ["c"] * 0 + ["x"])  # (6, 3, 1) / 10
    assert prior == [0.6, 0.3, 0.1]
    user = user_prior(labels, ["c", "c", "c", "b"], prior, smoothing=1.0)  # (0.6, 1.3, 3.1) / 5
    assert [round(p, 6) for p in user] == [0.12, 0.26, 0.62]
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))  # the model alone answers "a"
    shifted = calibrated(scores, [user], prior, weight=1.0)
    # log .5 + log(.12/.6) = -2.30; log .3 + log(.26/.3) = -1.35; log .2 + log(.62/.1) = 0.215 -> "c"
    assert shifted.argmax(-1).item() == 2
    assert abs(shifted[0, 2].item() - (math.log(0.2) + math.log(6.2))) < 1e-5
    assert torch.equal(calibrated(scores, [user], prior, weight=0.0), scores)
    same = user_prior(labels, ["a"] * 6 + ["b"] * 3 + ["c"], prior, smoothing=2.0)  # the global frequencies
    assert torch.allclose(calibrated(scores, [same], prior, weight=3.0), scores)
