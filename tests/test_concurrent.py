"""Concurrent per-user LoRA training (trainers/concurrent.py): equal to each user alone, no gradient flow between
users, close to the SFTTrainer path, standard PEFT folders, and train_users' skip/resume/failure semantics."""

import json

import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import FAST, logits, make_lamp2n, user_config
from oppu_hub.adapters import AdapterRecord, is_complete
from oppu_hub.data import load_task_split
from oppu_hub.inference import PredictConfig, predict
from oppu_hub.prompts import PromptBuilder, history_examples
from oppu_hub.tasks import get_task
from trainers import UserAdapterConfig, UserAdapterTrainer, train_users
from trainers.common import lr_factor, sft_config, warmup_steps
from trainers.concurrent import UserJob, tokenize_rows, train_lora_users


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
        record = dict(user_id=user, task="LaMP-2N", base_model="x", base_fingerprint="f")
        jobs.append(UserJob(user, rows, out / user, record, (weights or {}).get(user, 1.0)))
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


def test_close_to_the_sfttrainer_path(data, tiny_base, tok, tmp_path):
    """With one batch per epoch the shuffle cannot matter: the Trainer path and this loop do the same math."""
    kw = dict(users=["u3"], num_train_epochs=5, per_device_train_batch_size=6, learning_rate=0.01)
    seq = user_config(data, tiny_base, tmp_path / "seq", **kw)
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
    ca, cb = (json.loads((f / "adapter_config.json").read_text()) for f in (a, b))
    assert {k: v for k, v in ca.items() if k != "peft_version"} == {k: v for k, v in cb.items() if k != "peft_version"}
    ra, rb = AdapterRecord.from_folder(a), AdapterRecord.from_folder(b)
    assert abs(ra.train_loss - rb.train_loss) < 1e-3 * max(1.0, ra.train_loss)
    assert abs(sum(losses) / len(losses) - rb.train_loss) < 1e-3 * max(1.0, ra.train_loss)
    # Both load with plain peft and give the same logits.
    la = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), a).eval(), tok)
    lb = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), b).eval(), tok)
    assert torch.allclose(la, lb, atol=1e-4)
    assert not torch.allclose(la, logits(AutoModelForCausalLM.from_pretrained(tiny_base), tok), atol=1e-4)


def test_train_users_concurrent_learns_skips_and_resumes(data, tiny_base, tmp_path):
    config = user_config(data, tiny_base, tmp_path, concurrent=2)
    done = []

    def stop_after_first(user, folder):
        done.append(user)
        raise KeyboardInterrupt  # the process is killed right after the first user finished

    with pytest.raises(KeyboardInterrupt):
        train_users(config, on_done=stop_after_first)
    out = config.adapters_dir()
    assert [p.name for p in out.iterdir() if is_complete(p)] == done  # one whole adapter, nothing partial
    assert sorted(p.name for p in out.iterdir() if p.name != "run.json") == done  # no temp folders
    report = train_users(config)
    assert report.skipped == done and sorted(report.trained) == sorted({"u3", "u4", "u5"} - set(done))
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "u3", "u4", "u5"]  # no temp folders
    assert json.loads((out / "run.json").read_text())["skipped"] == done
    for user in ("u3", "u4", "u5"):
        record = AdapterRecord.from_folder(out / user)
        assert record.num_history_items == 6 and record.last_item_id == f"{user}-5" and record.train_loss > 0
        assert record.training["concurrent"] == 2 and oct((out / user).stat().st_mode & 0o777) == "0o700"
    _, _, scores = predict(PredictConfig(task="LaMP-2N", data_dir=str(data), base_dir=str(tiny_base),
                                         adapters_dir=str(out)))
    assert scores["accuracy"] == 1.0  # each user always picked one category; every adapter learned its own
    assert train_users(config).skipped == ["u3", "u4", "u5"]


def test_train_users_concurrent_records_failures_and_updates(data, tiny_base, tmp_path):
    from oppu_hub.profiles import ProfileStore

    ProfileStore(tmp_path / "profiles", "LaMP-2N").put("u4", "likes quantum things", {})
    config = user_config(data, tiny_base, tmp_path / "out", concurrent=3, num_train_epochs=1, profile=True,
                         profiles_dir=str(tmp_path / "profiles"))
    report = train_users(config)
    assert report.trained == ["u4"] and set(report.failed) == {"u3", "u5"}
    assert "no profile for user 'u3'" in report.failed["u3"]
    assert json.loads((config.adapters_dir() / "run.json").read_text())["failed"].keys() == {"u3", "u5"}
    update = user_config(data, tiny_base, tmp_path / "out", concurrent=3, num_train_epochs=1, profile=True,
                         profiles_dir=str(tmp_path / "profiles"), update=True, users=["u4"])
    assert train_users(update).skipped == ["u4"]  # no newer items: the sequential update path says so


def test_lr_schedule_matches_transformers():
    from transformers import get_linear_schedule_with_warmup

    for total in (1, 2, 7, 19, 20, 40):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = get_linear_schedule_with_warmup(opt, warmup_steps(total), total)
        for step in range(total):
            assert abs(opt.param_groups[0]["lr"] - lr_factor(step, total)) < 1e-9
            opt.step()
            sched.step()
