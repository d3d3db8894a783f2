"""Generation on one base with many users' adapters: mixed batches, LRU residency, base/adapter checks."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_random_adapter
from oppu_hub.adapters import AdapterBaseMismatchError, AdapterNotFoundError, adapter_name
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


@pytest.mark.parametrize("backend", ["gathered", "peft"])
def test_mixed_batch_matches_each_user_alone(tiny_base, adapters, backend):
    gen = Generator(*load_base(str(tiny_base)), lora_backend=backend)
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


def next_token_logits(gen, name, prompt="article: harbor story category:"):
    batch = gen.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        if name is None:
            return gen.base(**batch).logits[0, -1]
        return gen.model(**batch, adapter_names=[name]).logits[0, -1]


def test_same_name_other_folder_or_new_weights_replaces_the_resident_adapter(tiny_base, tmp_path):
    gen = Generator(*load_base(str(tiny_base)))
    first = make_random_adapter(tiny_base, tmp_path / "run1" / "alice", seed=1, user_id="alice")
    second = make_random_adapter(tiny_base, tmp_path / "run2" / "alice", seed=2, user_id="alice")
    assert gen.load(first, "alice") == "alice"
    before = next_token_logits(gen, "alice")
    assert torch.equal(next_token_logits(gen, "alice"), before)  # deterministic, so a change below is real
    gen.load(second, "alice")  # another folder under the same name (e.g. another sweep setting)
    after = next_token_logits(gen, "alice")
    assert not torch.allclose(before, after)
    assert gen.generate(["hi"], ["alice"], 4) == [alone(tiny_base, second, "hi", 4)]
    assert gen.resident == ["alice"]
    make_random_adapter(tiny_base, first, seed=3, user_id="alice")  # new weights in the same folder (--update)
    gen.load(first, "alice")
    assert gen.generate(["hi"], ["alice"], 4) == [alone(tiny_base, first, "hi", 4)]
    gen.load(first, "alice")  # unchanged: stays resident, same weights
    assert gen.generate(["hi"], ["alice"], 4) == [alone(tiny_base, first, "hi", 4)]


def test_dotted_user_ids_get_valid_adapter_names(tiny_base, tmp_path):
    gen = Generator(*load_base(str(tiny_base)))
    folders = [make_random_adapter(tiny_base, tmp_path / uid, seed=i, user_id=uid)
               for i, uid in enumerate(["j.smith", "j-smith"])]
    names = [gen.load(f, adapter_name(f.name)) for f in folders]
    assert "." not in names[0] and len(set(names)) == 2
    assert gen.generate(["hi", "hi"], names, 4) == [alone(tiny_base, f, "hi", 4) for f in folders]


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
