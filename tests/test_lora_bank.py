"""Serving LoRA adapters from the gathered multi-LoRA bank: the same logits as peft for every adapter shape it
holds, peft for what it cannot hold, and the base back as it came."""

import pytest
import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModelForCausalLM

from conftest import make_random_adapter
from oppu_hub.inference import Generator
from oppu_hub.lora_bank import LoraBank, unsupported
from oppu_hub.models import load_base

PROMPTS = ["article: harbor story category:", "a longer prompt about glaciers:", "hi"]
SHAPES = {  # rank, scale and target modules differ between users of one bank
    "r4-qv": {},
    "r8-qkvo": {"r": 8, "lora_alpha": 4, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "r2-mlp-rslora": {"r": 2, "lora_alpha": 16, "target_modules": ["gate_proj", "down_proj"], "use_rslora": True},
}


@pytest.fixture(scope="module")
def shaped(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("shaped")
    return {name: make_random_adapter(tiny_base, root / name, seed=i, user_id=name, lora=lora)
            for i, (name, lora) in enumerate(SHAPES.items())}


def peft_logits(tiny_base, folder, batch):
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    if folder is not None:
        model = PeftModel.from_pretrained(model, folder)
    with torch.no_grad():
        return model(**batch).logits[0, -1]


def test_bank_matches_peft_for_mixed_ranks_scales_and_targets(tiny_base, shaped):
    model, tok = load_base(str(tiny_base))
    bank = LoraBank(model, capacity=3)
    for name, folder in shaped.items():
        assert unsupported(folder, model) is None
        bank.add(name, folder)
    names = [*shaped, None] * len(PROMPTS)
    prompts = [p for p in PROMPTS for _ in range(len(shaped) + 1)]
    batch = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = bank(**batch, adapter_names=names).logits[:, -1]
    for i, (prompt, name) in enumerate(zip(prompts, names, strict=True)):
        alone = peft_logits(tiny_base, shaped.get(name), tok([prompt], return_tensors="pt"))
        torch.testing.assert_close(logits[i], alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits[0], logits[3])  # the adapters really change the logits
    with pytest.raises(ValueError, match="not resident"):
        bank(**batch, adapter_names=["nobody"] * len(prompts))
    with pytest.raises(ValueError, match="holds 3 adapters"):
        bank.add("fourth", shaped["r4-qv"])
    bank.close()
    assert all(type(m) is not LoraBank and "MultiLora" not in type(m).__name__ for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits[:, -1][3], peft_logits(
            tiny_base, None, tok([prompts[3]], return_tensors="pt")), atol=1e-5, rtol=1e-5)


def test_removed_slot_is_reused_and_other_users_unchanged(tiny_base, shaped):
    model, tok = load_base(str(tiny_base))
    bank = LoraBank(model, capacity=2)
    bank.add("a", shaped["r4-qv"])
    bank.add("b", shaped["r8-qkvo"])
    batch = tok(["hi"], return_tensors="pt")
    with torch.no_grad():
        before = bank(**batch, adapter_names=["b"]).logits
        bank.remove("a")
        bank.add("c", shaped["r2-mlp-rslora"])  # a new module and rank: the layers are rebuilt
        torch.testing.assert_close(bank(**batch, adapter_names=["b"]).logits, before)
    assert bank.names == ["b", "c"]
    bank.close()


def test_unsupported_adapters_go_to_peft(tiny_base, tmp_path, shaped):
    dora = make_random_adapter(tiny_base, tmp_path / "dora", seed=5, user_id="dora", lora={"use_dora": True})
    patterned = make_random_adapter(tiny_base, tmp_path / "patterned", seed=6, user_id="patterned",
                                    lora={"rank_pattern": {"q_proj": 2}})
    model, tok = load_base(str(tiny_base))
    assert unsupported(dora, model) == "use_dora=True"
    assert unsupported(patterned, model) == "rank_pattern={'q_proj': 2}"
    assert unsupported(shaped["r4-qv"], nn.Module()) is not None  # not a layer of that model
    gen = Generator(model, tok)
    names = [gen.load(patterned), gen.load(shaped["r4-qv"])]  # peft holds the first: the plain LoRA joins it
    assert isinstance(gen.model, PeftModel) and gen.resident == names
    reference = Generator(*load_base(str(tiny_base)), lora_backend="peft")
    for folder in (patterned, shaped["r4-qv"]):
        reference.load(folder)
    assert gen.generate(PROMPTS[:2], names, 4) == reference.generate(PROMPTS[:2], names, 4)
    gen.close()
    assert gen.model is gen.base and not isinstance(gen.model, PeftModel)
    gen.load(shaped["r4-qv"])  # the bank holds this one: a rank-patterned one cannot join its batches
    with pytest.raises(ValueError, match="cannot join"):
        gen.load(patterned)


def test_generator_lru_through_the_bank_keeps_the_base_clean(tiny_base, shaped):
    model, tok = load_base(str(tiny_base))
    gen = Generator(model, tok, max_adapters=1)
    reference = {n: Generator(*load_base(str(tiny_base)), lora_backend="peft") for n in shaped}
    for name, folder in shaped.items():
        gen.load(folder)
        assert gen.resident == [name]
        assert isinstance(gen.model, LoraBank)
        ref = reference[name]
        ref.load(folder)
        assert gen.generate(PROMPTS, [name] * 3, 5) == ref.generate(PROMPTS, [name] * 3, 5)
    gen.close()
    assert gen.model is model and not any("MultiLora" in type(m).__name__ for m in model.modules())
