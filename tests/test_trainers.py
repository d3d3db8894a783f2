"""The OPPU trainers on a tiny random Llama: loss masks, memorisation, reload, PEFT types, and the run layer's
contracts under every local executor: resume (after a real SIGKILL too), update, failures, push."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from datasets import Dataset
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from conftest import FAST, REPO, logits, make_lamp2n, user_config
from oppu_hub.adapters import AdapterRecord, is_complete
from oppu_hub.inference import PredictConfig, predict, save_predictions
from oppu_hub.models import model_fingerprint
from trainers import BaseTaskConfig, UserAdapterConfig, UserAdapterTrainer, train_base, train_users
from trainers.base import read_base_record
from trainers.common import lr_factor, sft_config, step_bar

# The run layer's contracts hold for every local executor: --concurrent 1 (SFTTrainer) and N slots.
EXECUTORS = pytest.mark.parametrize("concurrent", [1, 2], ids=["sequential", "concurrent"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lamp2n(tmp_path_factory.mktemp("data"), {"train": 4, "dev": 1, "test": 3})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data, tiny_base):
    """LoRA adapters of the three test users, trained once for the module."""
    out = tmp_path_factory.mktemp("users")
    config = user_config(data, tiny_base, out)
    report = train_users(config)
    assert report.trained == ["u5", "u6", "u7"] and not report.failed
    return config


def test_answer_only_mask_and_all_token_mask(tiny_base, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    args = sft_config(UserAdapterConfig(**FAST), tmp_path, 1, save_strategy="no")
    pairs = Dataset.from_list([{"prompt": "article: a b c category:", "completion": " politics"}])
    batch = next(iter(UserAdapterTrainer(model=model, args=args, train_dataset=pairs,
                                         processing_class=tok).get_train_dataloader()))
    labels = batch["labels"][0]
    n_prompt = len(tok("article: a b c category:").input_ids)
    assert (labels[:n_prompt] == -100).all()
    assert tok.decode(labels[n_prompt:]) == " politics" + tok.eos_token  # answer then EOS, nothing else
    text = Dataset.from_list([{"text": "a tweet about flying"}])
    batch = next(iter(UserAdapterTrainer(model=model, args=args, train_dataset=text,
                                         processing_class=tok).get_train_dataloader()))
    assert torch.equal(batch["labels"][0], batch["input_ids"][0])  # next-token pretraining: every token
    assert tok.decode(batch["input_ids"][0]) == "a tweet about flying" + tok.eos_token


class UpdateRecorder(TrainerCallback):
    """Records each optimizer update's learning rate and whether the trainable weights moved."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.moved: list[bool] = []
        self._before: torch.Tensor | None = None

    def _weights(self, model) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in model.parameters() if p.requires_grad])

    def on_step_begin(self, args, state, control, model=None, **kw):
        self._before = self._weights(model)

    def on_optimizer_step(self, args, state, control, optimizer=None, **kw):  # after step, before the scheduler
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_step_end(self, args, state, control, model=None, **kw):
        self.moved.append(not torch.equal(self._before, self._weights(model)))


@pytest.mark.parametrize("rows,batch,epochs", [(8, 4, 1), (6, 3, 3), (40, 2, 1)])
def test_every_optimizer_step_is_a_real_update(tiny_base, tmp_path, rows, batch, epochs):
    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base), UserAdapterConfig(**FAST).peft_config())
    config = UserAdapterConfig(**{**FAST, "per_device_train_batch_size": batch, "num_train_epochs": epochs})
    data = Dataset.from_list([{"prompt": f"article: item {i} category:", "completion": " politics"}
                              for i in range(rows)])
    recorder = UpdateRecorder()
    trainer = UserAdapterTrainer(model=model, args=sft_config(config, tmp_path, rows, save_strategy="no"),
                                 train_dataset=data, processing_class=tok, callbacks=[recorder])
    trainer.train()
    steps = epochs * -(-rows // batch)
    assert len(recorder.lrs) == steps
    assert recorder.lrs == pytest.approx([config.learning_rate * lr_factor(s, steps) for s in range(steps)])
    if steps < 20:  # short runs: no warmup, so every update has a non-zero rate and moves the adapter
        assert all(lr > 0 for lr in recorder.lrs) and all(recorder.moved)
    else:  # long runs warm up from lr 0 for ceil(5%) of their steps
        assert recorder.lrs[0] == 0 and all(lr > 0 for lr in recorder.lrs[1:]) and all(recorder.moved[1:])


def test_user_adapter_learns_the_users_labels(data, tiny_base, trained):
    config = PredictConfig(task="LaMP-2N", data_dir=str(data), base_dir=str(tiny_base))
    _, base_scores = save_predictions(config, predict(config))
    config = dataclasses.replace(config, adapters_dir=str(trained.adapters_dir()))
    after = predict(config)
    path, scores = save_predictions(config, after)
    assert base_scores["accuracy"] == 0.0
    assert scores["accuracy"] == 1.0, after  # each user always picked one category; the adapter learned it
    assert json.loads(path.read_text())["task"] == "LaMP_2N"
    for folder in trained.adapters_dir().iterdir():
        if folder.is_dir():
            log = AdapterRecord.from_folder(folder)
            assert log.train_loss is not None and log.num_history_items == 6 and log.last_item_id.endswith("-5")


def test_saved_adapter_reloads_to_identical_logits(data, tiny_base, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_base)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    config = user_config(data, tiny_base, tmp_path, users=["u5"], num_train_epochs=2, concurrent=1)
    captured = {}
    orig = UserAdapterTrainer.save_adapter

    def spy(self, folder, record, **kw):
        self.model.eval()
        captured["logits"] = logits(self.model, tok)
        return orig(self, folder, record, **kw)

    UserAdapterTrainer.save_adapter = spy
    try:
        train_users(config)
    finally:
        UserAdapterTrainer.save_adapter = orig
    folder = config.adapters_dir() / "u5"
    reloaded = PeftModel.from_pretrained(base, folder).eval()
    assert torch.allclose(logits(reloaded, tok), captured["logits"], atol=1e-6)
    assert not torch.allclose(logits(AutoModelForCausalLM.from_pretrained(tiny_base), tok), captured["logits"])
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize(("peft_type", "lr"), [("LORA", 0.02), ("IA3", 0.3), ("PROMPT_TUNING", 0.3)])
def test_each_peft_type_trains_and_reloads(data, tiny_base, tmp_path, peft_type, lr):
    tok = AutoTokenizer.from_pretrained(tiny_base)
    config = user_config(data, tiny_base, tmp_path, users=["u6"], peft_type=peft_type, learning_rate=lr,
                         num_train_epochs=6, per_device_train_batch_size=6, target_modules=["q_proj", "v_proj"],
                         concurrent=1)
    history = []
    orig = UserAdapterTrainer.save_adapter

    def spy(self, folder, record, **kw):
        history.extend(e["loss"] for e in self.state.log_history if "loss" in e)
        self.model.eval()
        history.append(logits(self.model, tok))
        return orig(self, folder, record, **kw)

    UserAdapterTrainer.save_adapter = spy
    try:
        assert train_users(config).trained == ["u6"]
    finally:
        UserAdapterTrainer.save_adapter = orig
    *losses, trained_logits = history
    assert losses[-1] < losses[0]
    folder = config.adapters_dir() / "u6"
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == peft_type
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), folder).eval()
    assert torch.allclose(logits(reloaded, tok), trained_logits, atol=1e-5)


def adapters_of(out, users):
    return {u: load_file(str(out / u / "adapter_model.safetensors")) for u in users}


@pytest.fixture
def step_bars(monkeypatch):
    """Every step bar the trainers open, kept after they close."""
    bars = []

    def recording():
        bars.append(step_bar())
        return bars[-1]

    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # a disabled bar counts nothing
    for module in ("trainers.user", "trainers.concurrent"):
        monkeypatch.setattr(f"{module}.step_bar", recording)
    return bars


@EXECUTORS
def test_interrupted_run_trains_nobody_twice(data, tiny_base, tmp_path, concurrent, step_bars):
    config = user_config(data, tiny_base, tmp_path, num_train_epochs=2, concurrent=concurrent)
    finished = []

    def stop_after_first(user, folder):
        finished.append(user)
        raise KeyboardInterrupt  # the process is stopped right after the first user finished

    with pytest.raises(KeyboardInterrupt):
        train_users(config, on_done=stop_after_first)
    out = config.adapters_dir()
    assert [p.name for p in out.iterdir() if is_complete(p)] == finished  # one whole adapter, nothing partial
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    checkpointed = {p.name[1:-len(".work")] for p in out.glob(".*.work") if any(p.iterdir())}
    step_bars.clear()
    report = train_users(config, on_done=lambda u, f: finished.append(u))
    assert report.skipped == finished[:1] and report.trained == sorted({"u5", "u6", "u7"} - set(finished[:1]))
    assert sorted(finished) == ["u5", "u6", "u7"]  # nobody finished twice
    full = 2 * 2  # epochs x steps per epoch (6 rows, batches of 3)
    assert all(report.steps[u] == (full // 2 if u in checkpointed else full) for u in report.trained)
    # The step bars reach every planned step, a resumed user's checkpointed ones counted as done.
    assert len(step_bars) == (len(report.trained) if concurrent == 1 else 1)
    assert sum(b.n for b in step_bars) == sum(b.total for b in step_bars) == full * len(report.trained)
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "u5", "u6", "u7"]  # no temp or work folders
    assert json.loads((out / "run.json").read_text())["skipped"] == finished[:1]


def test_a_user_failing_mid_run_leaves_the_step_bar_total(data, tiny_base, tmp_path, step_bars, monkeypatch):
    from trainers.concurrent import ConcurrentLoraTrainer

    config = user_config(data, tiny_base, tmp_path, num_train_epochs=2, concurrent=2)
    save = ConcurrentLoraTrainer._save_checkpoint

    def disk_full_for_u6(self, s, slot):
        if slot.job.user_id == "u6":
            raise OSError("disk full")
        return save(self, s, slot)

    monkeypatch.setattr(ConcurrentLoraTrainer, "_save_checkpoint", disk_full_for_u6)
    report = train_users(config)
    assert set(report.failed) == {"u6"} and report.trained == ["u5", "u7"]
    [bar] = step_bars
    assert bar.n == bar.total == 4 + 4 + 2  # u5 and u7 whole; u6 its first epoch, then its 2 other steps dropped


KILLED_RUN = """
import json, sys, time
from pathlib import Path
from trainers import UserAdapterConfig, train_users
from trainers.concurrent import ConcurrentLoraTrainer
from trainers.user import UserAdapterTrainer

config, user, marker = UserAdapterConfig(**json.loads(sys.argv[1])), sys.argv[2], Path(sys.argv[3])
work = config.adapters_dir() / f".{user}.work"
for cls in (UserAdapterTrainer, ConcurrentLoraTrainer):
    def pause_after_checkpoint(self, *a, _save=cls._save_checkpoint, **kw):
        _save(self, *a, **kw)
        if work.is_dir() and not marker.exists():
            marker.write_text("checkpointed")
            time.sleep(600)  # the test SIGKILLs the process here
    cls._save_checkpoint = pause_after_checkpoint
train_users(config)
"""


@EXECUTORS
def test_a_killed_run_resumes_from_the_checkpoint(data, tiny_base, tmp_path, concurrent):
    """SIGKILL during u7's training (after its first epoch checkpoint; u5 and u6 finished): the rerun skips the
    finished users, resumes u7 from the checkpoint and ends with the adapters of an uninterrupted run."""
    kw = dict(num_train_epochs=2, concurrent=concurrent, learning_rate=0.01)
    reference = user_config(data, tiny_base, tmp_path / "reference", **kw)
    assert train_users(reference).trained == ["u5", "u6", "u7"]
    config = user_config(data, tiny_base, tmp_path / "killed", **kw)
    marker, log = tmp_path / "checkpointed", tmp_path / "killed.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, json.dumps(vars(config)), "u7", str(marker)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), log.read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    out = config.adapters_dir()
    assert is_complete(out / "u5") and is_complete(out / "u6") and not (out / "u7").exists()
    report = train_users(config)
    assert report.skipped == ["u5", "u6"] and report.trained == ["u7"] and report.steps == {"u7": 2}  # of 4
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "u5", "u6", "u7"]
    ours, theirs = adapters_of(out, ["u7"])["u7"], adapters_of(reference.adapters_dir(), ["u7"])["u7"]
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert torch.allclose(ours[key], tensor, rtol=1e-4, atol=1e-6), (key, (ours[key] - tensor).abs().max())
    assert AdapterRecord.from_folder(out / "u7").train_loss == pytest.approx(
        AdapterRecord.from_folder(reference.adapters_dir() / "u7").train_loss, rel=1e-4)


@EXECUTORS
def test_update_continues_on_newer_items_only(tmp_path, tiny_base, concurrent):
    small = make_lamp2n(tmp_path / "small", {"test": 1}, history=4)
    kw = dict(num_train_epochs=1, concurrent=concurrent)
    config = user_config(small, tiny_base, tmp_path / "out", **kw)
    assert train_users(config).steps == {"u0": 2}  # 4 items, batches of 3
    folder = config.adapters_dir() / "u0"
    first, weights = AdapterRecord.from_folder(folder), adapters_of(folder.parent, ["u0"])["u0"]
    assert train_users(config).skipped == ["u0"]
    grown = make_lamp2n(tmp_path / "grown", {"test": 1}, history=7)
    # At learning rate 0 an update leaves the weights it continues from: the saved adapter's, not a fresh init.
    report = train_users(user_config(grown, tiny_base, tmp_path / "out", update=True, learning_rate=0.0, **kw))
    assert report.updated == ["u0"] and report.steps == {"u0": 1}  # items 4, 5, 6 are new: one batch
    assert all(torch.equal(adapters_of(folder.parent, ["u0"])["u0"][k], w) for k, w in weights.items())
    second = AdapterRecord.from_folder(folder)
    assert (first.num_history_items, second.num_history_items) == (4, 7)
    assert (first.last_item_id, second.last_item_id) == ("u0-3", "u0-6")
    assert second.trained_item_ids == [f"u0-{j}" for j in range(7)] and second.training["learning_rate"] == 0.0
    again = train_users(user_config(grown, tiny_base, tmp_path / "out", update=True, **kw))
    assert again.skipped == ["u0"]


@EXECUTORS
def test_one_failing_user_does_not_stop_the_others(data, tiny_base, tmp_path, concurrent):
    from oppu_hub.profiles import ProfileStore

    ProfileStore(tmp_path / "profiles", "LaMP-2N").put("u6", "likes ports and ships", {})
    config = user_config(data, tiny_base, tmp_path / "out", profile=True, profiles_dir=str(tmp_path / "profiles"),
                         num_train_epochs=1, concurrent=concurrent)
    report = train_users(config)
    assert report.trained == ["u6"] and set(report.failed) == {"u5", "u7"}
    assert "no profile for user 'u5'" in report.failed["u5"]
    assert json.loads((config.adapters_dir() / "run.json").read_text())["failed"].keys() == {"u5", "u7"}
    assert AdapterRecord.from_folder(config.adapters_dir() / "u6").training["concurrent"] == concurrent
    with pytest.raises(KeyError, match="user 'ghost' is not in LaMP-2N"):
        train_users(user_config(data, tiny_base, tmp_path / "x", users=["ghost"]))


def test_base_task_adaptation_merges_and_records(data, tiny_base, tmp_path):
    config = BaseTaskConfig(**{**FAST, "data_dir": str(data), "base_model": str(tiny_base),
                               "output_dir": str(tmp_path), "k": 1, "num_train_epochs": 1, "learning_rate": 0.01})
    folder = train_base(config)
    assert folder == tmp_path / "LaMP-2N" / "k1"
    record = read_base_record(folder)
    merged = AutoModelForCausalLM.from_pretrained(folder)
    assert record["fingerprint"] == model_fingerprint(merged)
    assert record["base_fingerprint"] == model_fingerprint(AutoModelForCausalLM.from_pretrained(tiny_base))
    assert record["fingerprint"] != record["base_fingerprint"]
    assert record["num_examples"] == 4 * 7 and record["k"] == 1 and record["train_loss"] > 0
    assert not any(n.startswith("lora") for n, _ in merged.named_parameters())  # a plain merged model
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert train_base(config) == folder and (folder / "model.safetensors").stat().st_mtime == mtime  # reused
    shutil.rmtree(folder)


def test_an_interrupted_base_resumes_mid_epoch(data, tiny_base, tmp_path, monkeypatch):
    """A base run stopped after its third step's checkpoint (of 10 in one epoch) resumes from that step, not from
    the start of the epoch, and merges the weights of an uninterrupted run."""
    from trainers.base import BaseTaskTrainer

    class Stopped(Exception):
        pass

    def config(out):
        return BaseTaskConfig(**{**FAST, "data_dir": str(data), "base_model": str(tiny_base), "output_dir": str(out),
                                 "k": 1, "num_train_epochs": 1, "learning_rate": 0.01})

    reference = train_base(config(tmp_path / "reference"))
    save, saved = BaseTaskTrainer._save_checkpoint, []

    def stop_after_third(self, *a, **kw):
        save(self, *a, **kw)
        saved.append(self.state.global_step)
        if saved == [1, 2, 3]:
            raise Stopped

    monkeypatch.setattr(BaseTaskTrainer, "_save_checkpoint", stop_after_third)
    with pytest.raises(Stopped):
        train_base(config(tmp_path / "stopped"))
    work = tmp_path / "stopped" / "LaMP-2N" / ".k1.work"
    # a checkpoint every tenth of the 10 steps, the newest kept
    assert saved == [1, 2, 3] and [p.name for p in work.glob("checkpoint-*")] == ["checkpoint-3"]
    saved.clear()
    folder = train_base(config(tmp_path / "stopped"))
    assert saved == list(range(4, 11)) and not work.exists()  # steps 4-10 only
    ours, theirs = load_file(folder / "model.safetensors"), load_file(reference / "model.safetensors")
    for key, tensor in theirs.items():
        assert torch.allclose(ours[key], tensor, rtol=1e-4, atol=1e-6), (key, (ours[key] - tensor).abs().max())


def test_push_to_hub_pushes_each_finished_adapter(data, tiny_base, tmp_path):
    from oppu_hub.store import open_store

    store_dir = tmp_path / "store"
    config = user_config(data, tiny_base, tmp_path / "out", users=["u5", "u6"], num_train_epochs=1,
                         push_to_hub=True, hub_store=str(store_dir))
    assert train_users(config).trained == ["u5", "u6"]
    refs = open_store(str(store_dir)).list(task="LaMP-2N")
    assert sorted(r.user for r in refs) == ["u5", "u6"] and all(r.private for r in refs)
    assert train_users(config).skipped == ["u5", "u6"]  # nothing new: nothing pushed again
    assert len(open_store(str(store_dir)).list(task="LaMP-2N")) == 2
