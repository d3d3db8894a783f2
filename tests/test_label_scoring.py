"""Label-scored answers (oppu_hub/label_scoring.py) on the tiny model: the shared-prompt batch equals scoring each
label alone with a full forward pass, the answer is their argmax, and a batch mixing users equals each user alone."""

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_random_adapter
from oppu_hub.label_scoring import best_labels, label_logprobs, label_token_ids

PROMPTS = ["article: harbor story about ships category:", "article: violin category:"]
LABELS = ["sports", "politics", "food & drink", "travel"]


def one_at_a_time(model, tokenizer, prompt, label):
    """log P(label tokens | prompt) from one unpadded forward pass over prompt + label."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    [label_ids] = label_token_ids(tokenizer, [label])
    ids = torch.tensor([prompt_ids + label_ids])
    with torch.no_grad():
        logp = model(input_ids=ids).logits.float().log_softmax(-1)[0]
    return sum(logp[len(prompt_ids) - 1 + t, tok].item() for t, tok in enumerate(label_ids))


def test_shared_prompt_batch_equals_each_label_alone(tiny_base):
    model = AutoModelForCausalLM.from_pretrained(tiny_base, torch_dtype=torch.float64)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    scores = label_logprobs(model, tokenizer, PROMPTS, LABELS)  # prompts of unequal length: left padding
    by_hand = torch.tensor([[one_at_a_time(model, tokenizer, p, y) for y in LABELS] for p in PROMPTS],
                           dtype=torch.float64)
    assert torch.allclose(scores.double(), by_hand, atol=1e-6), (scores, by_hand)
    assert best_labels(scores, LABELS) == [LABELS[j] for j in by_hand.argmax(-1).tolist()]
    assert tokenizer.padding_side == AutoTokenizer.from_pretrained(tiny_base).padding_side  # left as it came


def test_a_batch_mixing_users_equals_each_user_alone(tiny_base, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    base = AutoModelForCausalLM.from_pretrained(tiny_base, torch_dtype=torch.float64)
    a = make_random_adapter(tiny_base, tmp_path / "a", seed=1, user_id="a")
    b = make_random_adapter(tiny_base, tmp_path / "b", seed=2, user_id="b")
    model = PeftModel.from_pretrained(base, a, adapter_name="a")
    model.load_adapter(b, adapter_name="b")
    model.eval()
    mixed = label_logprobs(model, tokenizer, PROMPTS, LABELS, ["a", "b"])
    alone = torch.cat([label_logprobs(model, tokenizer, [p], LABELS, [name])
                       for p, name in zip(PROMPTS, "ab", strict=True)])
    assert torch.allclose(mixed, alone, atol=1e-6)
    base_rows = label_logprobs(model, tokenizer, PROMPTS, LABELS, ["__base__", "__base__"])
    assert not torch.allclose(mixed, base_rows)  # the adapters do change the scores
