"""NF4 bases (``load_in_4bit``, bitsandbytes): QLoRA training of users' adapters and prediction on the quantized
base, wherever bitsandbytes runs: on CUDA where the machine has it, else on the CPU."""

import dataclasses
import importlib.util

import pytest
from transformers import AutoModelForCausalLM

from conftest import make_lamp2n, make_tiny_llama, user_config
from oppu_hub.adapters import AdapterBaseMismatchError, AdapterRecord
from oppu_hub.inference import PredictConfig, predict, save_predictions
from oppu_hub.models import BaseModelConfig, BaseModelError, load_base, model_fingerprint
from oppu_hub.pipeline import hashable
from trainers import train_users

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="bitsandbytes is not installed (pip install 'oppu-hub[4bit]')")


@pytest.fixture(scope="module")
def base64(tmp_path_factory, tokenizer_dir):
    """The tiny Llama at width 64: bitsandbytes' CPU kernels quantize in blocks of 64 input features."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-64"), tokenizer_dir, hidden_size=64)


def test_4bit_without_bitsandbytes_is_a_clear_error(tiny_base, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(BaseModelError, match=r"load_in_4bit needs bitsandbytes: pip install 'oppu-hub\[4bit\]'"):
        load_base(BaseModelConfig(str(tiny_base), load_in_4bit=True))


def test_4bit_is_hashed_only_when_set(tiny_base, tmp_path):
    """Adapters trained before the option existed keep their content-addressed folders."""
    plain = user_config(tmp_path, tiny_base, tmp_path)
    assert "load_in_4bit" not in hashable(plain)
    assert hashable(dataclasses.replace(plain, load_in_4bit=True))["load_in_4bit"] is True


@needs_bnb
def test_nf4_base_has_its_own_fingerprint(base64):
    import bitsandbytes as bnb

    quantized, _ = load_base(BaseModelConfig(str(base64), load_in_4bit=True))
    assert isinstance(quantized.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    again, _ = load_base(BaseModelConfig(str(base64), load_in_4bit=True))
    plain = AutoModelForCausalLM.from_pretrained(base64)
    assert model_fingerprint(quantized) == model_fingerprint(again) != model_fingerprint(plain)


@needs_bnb
@pytest.mark.parametrize("concurrent", [1, 2], ids=["sequential", "concurrent"])
def test_qlora_users_learn_and_predict_on_the_nf4_base(base64, tmp_path, concurrent):
    data = make_lamp2n(tmp_path / "data", {"test": 2})
    config = user_config(data, base64, tmp_path / "users", load_in_4bit=True, concurrent=concurrent)
    report = train_users(config)
    assert report.trained == ["u0", "u1"] and not report.failed, report.failed
    record = AdapterRecord.from_folder(config.adapter_folder("u0"))
    assert record.training["load_in_4bit"] is True and record.train_loss is not None
    predict_config = PredictConfig(task="LaMP-2N", data_dir=str(data), base_dir=str(base64), load_in_4bit=True)
    _, base_scores = save_predictions(predict_config, predict(predict_config))
    predict_config = dataclasses.replace(predict_config, adapters_dir=str(config.adapters_dir()))
    after = predict(predict_config)
    _, scores = save_predictions(predict_config, after)
    assert base_scores["accuracy"] == 0.0
    assert scores["accuracy"] == 1.0, after  # each user always picked one category; the QLoRA adapter learned it
    with pytest.raises(AdapterBaseMismatchError, match="quantized to NF4.*with --load_in_4bit"):
        predict(dataclasses.replace(predict_config, load_in_4bit=False))
