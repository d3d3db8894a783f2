"""Concurrent per-user LoRA training (trainers/concurrent.py): equal to each user alone, no gradient flow between
users, close to the SFTTrainer path, standard PEFT folders, gradient accumulation, updates of saved adapters, and
how many slots it uses. The run layer's skip/resume/update/failure contracts are tested for every executor in
test_trainers.py."""

import dataclasses
import json
import re
import traceback

import pytest
import torch
from datasets import Dataset
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import FAST, logits, make_lamp2n, user_config
from oppu_hub.adapters import AdapterRecord
from oppu_hub.data import load_task_split
from oppu_hub.prompts import PromptBuilder, history_examples
from oppu_hub.tasks import get_task
from trainers import ConcurrentExecutor, SequentialExecutor, UserAdapterConfig, UserAdapterTrainer, UserJob, train_users
from trainers.common import MAX_AUTO_SLOTS, lr_factor, max_length, sft_config, slots_that_fit, warmup_steps
from trainers.concurrent import ConcurrentLoraTrainer, train_lora_users
from trainers.rows import batch_plan, tokenize_rows
from trainers.runs import local_executor


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lamp2n(tmp_path_factory.mktemp("data"), {"train": 2, "dev": 1, "test": 3})


@pytest.fixture(scope="module")
def tok(tiny_base):
    return AutoTokenizer.from_pretrained(tiny_base)


def jobs_for(config, data, tok, out, sizes=None, weights=None):
    """One UserJob per test user; ``sizes`` truncates users' rows (unequal lengths exercise slot refills)."""
    split = load_task_split(str(data), get_task("LaMP-2N"), "test")
    builder = PromptBuilder(get_task("LaMP-2N"), tok, config.max_prompt_length)
    jobs = []
    for i, user in enumerate(split.user_ids):
        rows = history_examples(builder, split.user_history(user), config.k)
        rows = rows[:sizes[i]] if sizes else rows
        record = AdapterRecord(user_id=user, task="LaMP-2N", base_model="x", base_fingerprint="f")
        jobs.append(UserJob(user, rows, out / user, record, loss_weight=(weights or {}).get(user, 1.0)))
    return jobs


def saved(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_tokenization_matches_sfttrainer(tiny_base, tok, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    args = sft_config(UserAdapterConfig(**FAST), tmp_path, 1, save_strategy="no")
    for row in ({"prompt": "article: a b c category:", "completion": " politics"}, {"text": "a tweet about flying"}):
        batch = next(iter(UserAdapterTrainer(model=model, args=args, train_dataset=Dataset.from_list([row]),
                                             processing_class=tok).get_train_dataloader()))
        [mine] = tokenize_rows([row], tok, args.max_length)
        assert mine.input_ids == batch["input_ids"][0].tolist() and mine.labels == batch["labels"][0].tolist()


@pytest.mark.parametrize(("dtype", "atol", "targets"), [(torch.float64, 1e-12, None), (torch.float32, 1e-4, None),
                                                      (torch.float64, 1e-12, ["all-linear"])])
def test_concurrent_equals_each_user_alone(data, tiny_base, tok, tmp_path, dtype, atol, targets):
    """In float64 the adapters agree to rounding; in float32 summation order moves them by ~1e-5 (Adam divides
    tiny gradients by their own size, so near-zero entries amplify rounding; lr is 0.01 per step here)."""
    config = user_config(data, tiny_base, tmp_path, num_train_epochs=2, learning_rate=0.01,
                         **({"target_modules": targets} if targets else {}))
    model = AutoModelForCausalLM.from_pretrained(tiny_base).to(dtype)
    sizes = [6, 4, 5]  # users finish at different steps: slots are refilled mid-run
    alone = train_lora_users(config, config.peft_config(), model, tok,
                             jobs_for(config, data, tok, tmp_path / "alone", sizes), slots=1)
    together = train_lora_users(config, config.peft_config(), model, tok,
                                jobs_for(config, data, tok, tmp_path / "together", sizes), slots=2,
                                max_batch_tokens=64)  # several micro-batches per step too
    assert [r.user_id for r in alone] == ["u3", "u4", "u5"] and not any(r.error for r in alone + together)
    assert sorted(r.user_id for r in together) == ["u3", "u4", "u5"]
    by_user = {r.user_id: r for r in together}
    for a in alone:
        b = by_user[a.user_id]
        assert len(a.losses) == len(b.losses) and torch.allclose(torch.tensor(a.losses), torch.tensor(b.losses),
                                                                 atol=atol)
        wa, wb = saved(a.folder), saved(b.folder)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.allclose(wa[key], wb[key], atol=atol, rtol=0), (key, (wa[key] - wb[key]).abs().max())
        assert any(w.abs().sum() > 0 for k, w in wa.items() if "lora_B" in k)  # it did train
        if targets:  # all-linear: attention and MLP projections, never the LM head
            assert any("mlp.down_proj" in k for k in wa) and not any("lm_head" in k for k in wa)
    # The base is left exactly as it came: no wrapped layers, frozen flags restored.
    assert not any("lora" in n or n.endswith(".A") for n, _ in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_gradients_never_flow_between_users(data, tiny_base, tok, tmp_path):
    config = user_config(data, tiny_base, tmp_path, num_train_epochs=2)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    jobs = jobs_for(config, data, tok, tmp_path / "run", weights={"u4": 0.0})
    results = {r.user_id: r for r in train_lora_users(config, config.peft_config(), model, tok, jobs, slots=3)}
    frozen, trained = saved(results["u4"].folder), saved(results["u3"].folder)
    for key, w in frozen.items():
        if "lora_B" in key:
            assert torch.count_nonzero(w) == 0 and torch.count_nonzero(trained[key]) > 0, key  # B starts at zero
    init = train_lora_users(config, config.peft_config(), model, tok,
                            jobs_for(config, data, tok, tmp_path / "init", sizes=[1, 1, 1],
                                     weights={"u3": 0.0, "u4": 0.0, "u5": 0.0}), slots=3)
    assert all(torch.equal(frozen[k], saved(init[0].folder)[k]) for k in frozen)  # still the initial adapter


@pytest.mark.parametrize(("batch", "accumulation"), [(6, 1), (3, 2)])
def test_close_to_the_sfttrainer_path(data, tiny_base, tok, tmp_path, batch, accumulation):
    """With one optimizer step per epoch the shuffle cannot matter: the Trainer path and this loop do the same
    math, with gradient accumulation too (two batches of 3 make one update)."""
    kw = dict(users=["u3"], num_train_epochs=5, per_device_train_batch_size=batch,
              gradient_accumulation_steps=accumulation, learning_rate=0.01)
    seq = user_config(data, tiny_base, tmp_path / "seq", concurrent=1, **kw)
    con = user_config(data, tiny_base, tmp_path / "con", concurrent=2, **kw)
    losses = []
    orig = UserAdapterTrainer.save_adapter

    def spy(self, folder, record, **k):
        losses.extend(e["loss"] for e in self.state.log_history if "loss" in e)
        return orig(self, folder, record, **k)

    UserAdapterTrainer.save_adapter = spy
    try:
        assert train_users(seq).trained == ["u3"]
    finally:
        UserAdapterTrainer.save_adapter = orig
    assert train_users(con).trained == ["u3"]
    a, b = seq.adapters_dir() / "u3", con.adapters_dir() / "u3"
    wa, wb = saved(a), saved(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-4, rtol=1e-3), (key, (wa[key] - wb[key]).abs().max())
    ca, cb = ({k: sorted(v) if k == "target_modules" else v  # peft writes a set: its order follows the hash seed
               for k, v in json.loads((f / "adapter_config.json").read_text()).items() if k != "peft_version"}
              for f in (a, b))
    assert ca == cb
    ra, rb = AdapterRecord.from_folder(a), AdapterRecord.from_folder(b)
    assert abs(ra.train_loss - rb.train_loss) < 1e-3 * max(1.0, ra.train_loss)
    assert abs(sum(losses) / len(losses) - rb.train_loss) < 1e-3 * max(1.0, ra.train_loss)
    # Both load with plain peft and give the same logits.
    la = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), a).eval(), tok)
    lb = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), b).eval(), tok)
    assert torch.allclose(la, lb, atol=1e-4)
    assert not torch.allclose(la, logits(AutoModelForCausalLM.from_pretrained(tiny_base), tok), atol=1e-4)


def test_lm_head_only_at_label_positions_and_length_sorted_micro_batches(data, tiny_base, tok, tmp_path):
    config = user_config(data, tiny_base, tmp_path, num_train_epochs=1)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    jobs = jobs_for(config, data, tok, tmp_path / "run")
    head_rows, shapes = [], []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[0]))
    model.model.register_forward_pre_hook(lambda m, args, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                          with_kwargs=True)
    train_lora_users(config, config.peft_config(), model, tok, jobs, slots=3, max_batch_tokens=64)
    labels = 0
    for job in jobs:
        rows = tokenize_rows(job.rows, tok, max_length(config))
        labels += sum(t != -100 for step in batch_plan(config, len(rows)) for i in step for t in rows[i].labels[1:])
    assert sum(head_rows) == labels  # the LM head saw exactly the positions that carry a label
    assert all(n * width <= 64 or n == 1 for n, width in shapes) and len(shapes) > 2  # bounded micro-batches
    widths = [width for _, width in shapes]
    steps = 2  # three users in three slots, 6 rows each in batches of 3: every step holds all of them
    assert sum(b < a for a, b in zip(widths, widths[1:], strict=False)) <= steps - 1  # shortest rows first


def test_gradient_accumulation_is_one_update_over_the_accumulated_batches(data, tiny_base, tok, tmp_path):
    config = user_config(data, tiny_base, tmp_path, num_train_epochs=3, per_device_train_batch_size=2,
                         gradient_accumulation_steps=2)
    whole = user_config(data, tiny_base, tmp_path, num_train_epochs=3, per_device_train_batch_size=4)
    assert batch_plan(config, 6) == batch_plan(whole, 6) and len(batch_plan(config, 6)) == 3 * 2
    assert len(batch_plan(dataclasses.replace(config, gradient_accumulation_steps=1), 6)) == 3 * 3
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    accumulated = train_lora_users(config, config.peft_config(), model, tok,
                                   jobs_for(config, data, tok, tmp_path / "accumulated"), slots=3)
    batched = train_lora_users(whole, whole.peft_config(), model, tok, jobs_for(whole, data, tok, tmp_path / "whole"),
                               slots=3)
    for a, b in zip(accumulated, batched, strict=True):
        assert a.steps == b.steps == 6 and a.losses == pytest.approx(b.losses, abs=1e-6)
        wa, wb = saved(a.folder), saved(b.folder)
        assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_update_of_an_adapter_of_another_shape_is_refused(data, tiny_base, tmp_path):
    config = user_config(data, tiny_base, tmp_path, users=["u3"], num_train_epochs=1)
    assert train_users(config).trained == ["u3"]
    grown = make_lamp2n(tmp_path / "grown", {"train": 2, "dev": 1, "test": 3}, history=8)
    before = saved(config.adapters_dir() / "u3")
    report = train_users(user_config(grown, tiny_base, tmp_path, users=["u3"], update=True, lora_r=4))
    assert "another rank, alpha or target modules" in report.failed["u3"] and "--concurrent 1" in report.failed["u3"]
    assert all(torch.equal(w, saved(config.adapters_dir() / "u3")[k]) for k, w in before.items())
    # The sequential path continues the adapter with the settings it was saved with.
    assert train_users(user_config(grown, tiny_base, tmp_path, users=["u3"], update=True, lora_r=4,
                                   concurrent=1)).updated == ["u3"]


def test_slots_fit_in_free_memory(data, tiny_base, tok, tmp_path, monkeypatch, caplog):
    from trainers import common

    assert common.free_memory(torch.device("cpu")) > 0
    assert slots_that_fit(1, torch.device("cpu"), 5) == 5 and slots_that_fit(2**62, torch.device("cpu"), 5) == 1
    config = user_config(data, tiny_base, tmp_path, num_train_epochs=1)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    lora = sum(p.numel() for n, p in get_peft_model(model, config.peft_config()).named_parameters() if "lora_" in n)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    monkeypatch.setattr(common, "free_memory", lambda device: 2 * 8 * 4 * lora * 2)  # room for two slots
    trainer = ConcurrentLoraTrainer(config, config.peft_config(), model, tok, slots=3)
    results = []
    trainer.run(jobs_for(config, data, tok, tmp_path / "run"), results.append)
    assert trainer.slots == 2 and "2 users at a time fit in memory, not 3" in caplog.text
    assert sorted(r.user_id for r in results) == ["u3", "u4", "u5"] and not any(r.error for r in results)


def test_the_default_trains_lora_users_together():
    assert UserAdapterConfig().concurrent == 0
    assert local_executor(UserAdapterConfig()) == ConcurrentExecutor(MAX_AUTO_SLOTS)
    assert local_executor(UserAdapterConfig(concurrent=3)) == ConcurrentExecutor(3)
    assert isinstance(local_executor(UserAdapterConfig(concurrent=1)), SequentialExecutor)
    for peft_type in ("IA3", "PROMPT_TUNING"):
        assert isinstance(local_executor(UserAdapterConfig(peft_type=peft_type)), SequentialExecutor)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("concurrent", -1, "concurrent must be 0 (auto), 1 (one by one) or more"),
    ("gradient_accumulation_steps", 0, "gradient_accumulation_steps must be at least 1"),
    ("num_train_epochs", 0, "num_train_epochs must be positive"),
])
def test_impossible_settings_are_refused_before_loading(data, tiny_base, tmp_path, field, value, message):
    config = user_config(data, tiny_base, tmp_path, **{field: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        train_users(config)
    assert not (tmp_path / "LaMP-2N").exists()


def test_lr_schedule_matches_transformers():
    from transformers import get_linear_schedule_with_warmup

    for total in (1, 2, 7, 19, 20, 40):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = get_linear_schedule_with_warmup(opt, warmup_steps(total), total)
        for step in range(total):
            assert abs(opt.param_groups[0]["lr"] - lr_factor(step, total)) < 1e-9
            opt.step()
            sched.step()


def test_a_step_creates_no_tensor_off_the_model_device(data, tiny_base, tok, tmp_path):
    """The CUDA guard, run on CPU: with the model on ``meta`` every tensor the step makes on the host instead of
    the model's device fails as ``cuda:0 and cpu`` did on a GPU. Each user fails only where the loop finally
    copies its losses out to the host (meta tensors hold no values), i.e. after a whole forward, backward and
    AdamW step ran on the device."""
    config = user_config(data, tiny_base, tmp_path, num_train_epochs=1)
    model_config = AutoModelForCausalLM.from_pretrained(tiny_base).config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, attn_implementation="eager")
    results = train_lora_users(config, config.peft_config(), model, tok, jobs_for(config, data, tok, tmp_path / "run"),
                               slots=2)
    assert len(results) == 3 and all(r.error is not None for r in results)
    for r in results:
        frames = [f.name for f in traceback.extract_tb(r.error.__traceback__)]
        assert "Cannot copy out of meta tensor" in str(r.error) and frames == ["_loop"], (r.error, frames)
