"""Generation on one base with many users' adapters: mixed batches, LRU residency, base/adapter checks."""

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_random_adapter
from oppu_hub.adapters import AdapterBaseMismatchError, AdapterNotFoundError
from oppu_hub.inference import Generator, clean_answer
from oppu_hub.models import load_base
from oppu_hub.tasks import get_task

PROMPTS = ["article: harbor story category:", "a much longer prompt about glaciers and the cold tundra:", "hi"]


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return [make_random_adapter(tiny_base, root / f"user{i}", seed=i, user_id=f"user{i}") for i in range(3)]


def alone(tiny_base, folder, prompt, max_new_tokens=6):
    """The reference: one prompt, one adapter (or none), its own model, no batching."""
    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    if folder is not None:
        model = PeftModel.from_pretrained(model, folder)
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_mixed_batch_matches_each_user_alone(tiny_base, adapters):
    gen = Generator(*load_base(str(tiny_base)))
    names = [gen.load(folder) for folder in adapters]
    rows = [(p, a) for p in PROMPTS for a in [*names, None]]
    outputs = gen.generate([p for p, _ in rows], [a for _, a in rows], max_new_tokens=6, batch_size=12)
    folders = dict(zip(names, adapters, strict=True))
    for (prompt, name), text in zip(rows, outputs, strict=True):
        assert text == alone(tiny_base, folders.get(name), prompt), (prompt, name)
    assert len(set(outputs[:4])) > 1  # the adapters really change the answers


def test_lru_keeps_at_most_max_adapters(tiny_base, adapters):
    gen = Generator(*load_base(str(tiny_base)), max_adapters=2)
    for folder in adapters:
        gen.load(folder)
    assert gen.resident == ["user1", "user2"]
    gen.load(adapters[1])
    gen.load(adapters[0])
    assert gen.resident == ["user1", "user0"]
    assert gen.generate(["hi"], ["user0"], 4) == [alone(tiny_base, adapters[0], "hi", 4)]


def test_wrong_base_and_missing_adapter(tiny_base, adapters, tmp_path):
    other = AutoModelForCausalLM.from_pretrained(tiny_base)
    other.model.layers[0].self_attn.q_proj.weight.data += 0.5
    other.save_pretrained(tmp_path / "other")
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(tmp_path / "other")
    gen = Generator(*load_base(str(tmp_path / "other")))
    with pytest.raises(AdapterBaseMismatchError, match="trained on base"):
        gen.load(adapters[0])
    with pytest.raises(AdapterNotFoundError, match="no complete adapter"):
        gen.load(tmp_path / "nothing")


def test_clean_answer():
    assert clean_answer(get_task("LaMP-2N"), "Politics. It is") == "politics"
    assert clean_answer(get_task("LaMP-2N"), "gibberish\nmore") == "gibberish"
    assert clean_answer(get_task("LaMP-3"), "") == ""
