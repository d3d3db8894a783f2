"""bench/protocol_dev.py: a choice cut short resumes from its partial file without redoing a finished step."""

import dataclasses
import importlib.util
import json
import sys

import pytest

from conftest import REPO, make_lamp2n
from oppu_hub.io import read_json, write_json


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(REPO / "bench"))  # protocol_dev imports tune_users as a sibling script
protocol_dev = _load("protocol_dev")

CURVE = {1: 0.5, 2: 0.6, 3: 0.55}  # np-k0 on dev after each base epoch: 2 epochs are chosen


def test_an_interrupted_choice_resumes_from_its_partial_file(tmp_path, monkeypatch):
    data = make_lamp2n(tmp_path / "data", {"train": 6, "dev": 10, "test": 3}, history=3)
    config = protocol_dev.PipelineConfig(data_dir=str(data), workdir=str(tmp_path / "work"), split="dev", users=0)
    selection = protocol_dev.SelectionConfig(tasks=["LaMP-2N"], out=str(tmp_path / "out"), record=False)
    curve_runs, user_runs = [], []

    def fake_run(pipeline, methods, out):
        epochs = int(pipeline.config.base.num_train_epochs)
        curve_runs.append(epochs)
        return [{"scores": {"accuracy": CURVE[epochs], "f1": 0.0}, "base": f"base-{epochs}"}]

    def fake_setting(config, task, out, **setting):
        if setting["lr"] == 3e-4 and not user_runs[-1:] == ["resume"]:
            raise RuntimeError("cut short")
        user_runs.append(setting["lr"])
        return {**setting, "scores": {"accuracy": setting["lr"] * 100, "f1": 0.0}, "seconds": 1.0}

    monkeypatch.setattr(protocol_dev.Pipeline, "run", fake_run)
    monkeypatch.setattr(protocol_dev, "run_setting", fake_setting)
    with pytest.raises(RuntimeError, match="cut short"):
        protocol_dev.select(config, selection, "LaMP-2N")
    partial = tmp_path / "out" / "protocol_dev-LaMP-2N.partial.json"
    kept = read_json(partial)
    assert [s["epochs"] for s in kept["curve"]] == [1, 2, 3] and [r["lr"] for r in kept["users"]] == [1e-4]
    assert all(s["machine"] for s in kept["curve"] + kept["users"])
    assert curve_runs == [1, 2, 3] and user_runs == [1e-4]

    user_runs.append("resume")
    result = protocol_dev.select(config, selection, "LaMP-2N")
    assert curve_runs == [1, 2, 3]  # no curve epoch again
    assert user_runs[2:] == [3e-4, 1e-3, 3e-3, 3e-3]  # 1e-4 was kept; then the other epochs at the best rate
    assert result["base_epochs"] == 2 and result["user"]["learning_rate"] == 3e-3
    assert [r["lr"] for r in result["user_rows"]][:4] == [1e-4, 3e-4, 1e-3, 3e-3]
    assert all(r["base_epochs"] == 2.0 for r in result["user_rows"])
    assert result["np_k0_here"] == kept["curve"][1]  # this machine measured the chosen base: not scored again
    assert not partial.exists()
    assert read_json(tmp_path / "out" / "protocol_dev-LaMP-2N.json")["base_epochs"] == 2


def test_a_curve_from_another_machine_is_scored_again_on_this_base(tmp_path, monkeypatch):
    """The GPU's base curve beside this machine's user rows: np-k0 is measured again on the base the rows sat on
    (the same settings trained here are another base); this machine's own curve step is reused."""
    data = make_lamp2n(tmp_path / "data", {"train": 6, "dev": 10, "test": 3}, history=3)
    config = protocol_dev.PipelineConfig(data_dir=str(data), workdir=str(tmp_path / "work"), split="dev", users=0)
    runs = []

    def fake_run(pipeline, methods, out):
        runs.append((methods, pipeline.config.split))
        return [{"scores": {"accuracy": 0.7, "f1": 0.0}, "base": "base-here"}]

    monkeypatch.setattr(protocol_dev.Pipeline, "run", fake_run)
    elsewhere = {"epochs": 2, "scores": {"accuracy": 0.6, "f1": 0.0}, "base": None, "machine": "GPU elsewhere"}
    here = protocol_dev.base_here(config, "LaMP-2N", elsewhere, tmp_path / "work")
    assert runs == [(["np-k0"], "dev")] and here["scores"]["accuracy"] == 0.7 and here["epochs"] == 2
    assert here["machine"] == protocol_dev.machine() and here["base"] == "base-here"
    assert protocol_dev.base_here(config, "LaMP-2N", here, tmp_path / "work") is here and len(runs) == 1


def test_a_choice_recorded_before_a_new_setting_existed_still_stands(tmp_path, monkeypatch):
    """A field added to the training configs later (``load_in_4bit``), at its default, does not make a recorded
    choice look like one of other settings (it would be chosen again: hours on a CPU); set, it does."""
    data = make_lamp2n(tmp_path / "data", {"train": 6, "dev": 10, "test": 3}, history=3)
    config = protocol_dev.PipelineConfig(data_dir=str(data), workdir=str(tmp_path / "work"), split="dev", users=0)
    selection = protocol_dev.SelectionConfig(tasks=["LaMP-2N"], out=str(tmp_path / "out"), record=False)
    monkeypatch.setattr(protocol_dev.Pipeline, "run", lambda *a: pytest.fail("chose again"))
    path = tmp_path / "out" / "protocol_dev-LaMP-2N.json"
    settings = json.loads(json.dumps(dataclasses.asdict(config)))
    del settings["user"]["load_in_4bit"]  # as written before the field existed
    data_hashes = protocol_dev.Pipeline(config, "LaMP-2N").source_hashes()
    write_json(path, {"config": settings, "data": data_hashes, "base_epochs": 2})
    assert protocol_dev.select(config, selection, "LaMP-2N")["base_epochs"] == 2
    config.user.load_in_4bit = True
    with pytest.raises(pytest.fail.Exception, match="chose again"):
        protocol_dev.select(config, selection, "LaMP-2N")
