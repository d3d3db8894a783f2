"""Write .gpu/smoke for bench/gpu/smoke.sh: a 2-layer random Llama with the SmolLM2 tokenizer and the tests' tiny
synthetic LaMP-2N (tests/conftest.py), so the GPU box checks every CUDA path before the long run."""

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from oppu_hub.models import default_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import make_lamp2n  # noqa: E402

OUT = Path(".gpu/smoke")

shutil.rmtree(OUT, ignore_errors=True)
gguf = default_gguf()
tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
config = LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
)
torch.manual_seed(0)
LlamaForCausalLM(config).save_pretrained(OUT / "model")
tokenizer.save_pretrained(OUT / "model")
make_lamp2n(OUT / "data")
