"""The command line end to end: data build on the real sources, train-base, train-users, predict, errors."""

import json

import pytest

from conftest import SHARED_DATA
from oppu_hub.cli import main


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the public source data is not at {SHARED_DATA}")
    out = tmp_path_factory.mktemp("data")
    assert main(["data", "build", "--source_dir", str(SHARED_DATA), "--out_dir", str(out), "--tasks", "LaMP-3"]) == 0
    return out


def test_pipeline_on_real_data_with_the_tiny_model(built, tiny_base, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train-base", "--task", "LaMP-3", "--data_dir", str(built), "--base_model", str(tiny_base),
                 "--output_dir", str(runs / "base"), "--num_train_epochs", "1", "--max_examples", "8"]) == 0
    base = runs / "base" / "LaMP-3" / "k0"
    assert (base / "oppu_base.json").exists()
    assert main(["train-users", "--task", "LaMP-3", "--data_dir", str(built), "--base_dir", str(base),
                 "--output_dir", str(runs / "users"), "--max_users", "2", "--num_train_epochs", "1"]) == 0
    adapters = runs / "users" / "LaMP-3" / "k0-lora"
    assert len([p for p in adapters.iterdir() if p.is_dir()]) == 2
    out = tmp_path / "preds.json"
    assert main(["predict", "--task", "LaMP-3", "--data_dir", str(built), "--base_dir", str(base),
                 "--adapters_dir", str(adapters), "--max_users", "2", "--output", str(out)]) == 0
    preds = json.loads(out.read_text())
    assert preds["task"] == "LaMP_3" and len(preds["golds"]) == 2
    printed = capsys.readouterr().out
    assert "2 trained, 0 updated, 0 skipped, 0 failed" in printed and "mae=" in printed and "rmse=" in printed
    # k=0 adapters with k=1 prompts: refused (the paper pairs each column with adapters trained the same way)
    mismatched = tmp_path / "k1-with-k0-adapters.json"
    argv = ["predict", "--task", "LaMP-3", "--data_dir", str(built), "--base_dir", str(base), "--k", "1",
            "--adapters_dir", str(adapters), "--max_users", "2", "--output", str(mismatched)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "trained with k=0 (requested 1)" in err and "--allow_setting_mismatch" in err and len(err.splitlines()) == 1
    assert not mismatched.exists()
    assert main([*argv, "--allow_setting_mismatch"]) == 0 and mismatched.exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["predict", "--task", "LaMP-9"], "unknown task 'LaMP-9'"),
    (["predict", "--task", "LaMP-3", "--data_dir", "/nonexistent"], "oppu-hub data build"),
    (["data", "validate", "--questions", "/nonexistent.json"], "no such file"),
])
def test_errors_are_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_user_and_adapter(built, tiny_base, tmp_path, capsys):
    assert main(["predict", "--task", "LaMP-3", "--data_dir", str(built), "--base_dir", str(tiny_base),
                 "--users", "nobody"]) == 2
    assert "user 'nobody' is not in LaMP-3" in capsys.readouterr().err
    assert main(["predict", "--task", "LaMP-3", "--data_dir", str(built), "--base_dir", str(tiny_base),
                 "--max_users", "1", "--adapters_dir", str(tmp_path)]) == 2
    assert "no adapter for users" in capsys.readouterr().err


def test_help_on_every_command(capsys):
    commands = ["data", "train-base", "train-users", "profiles", "predict", "push", "list", "pull", "delete", "demo",
                "eval", "analyze", "space"]
    for argv in [["--help"], *([command, "--help"] for command in commands)]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    assert "--peft_type" in capsys.readouterr().out
