"""The paper protocol's settings (oppu_hub/protocol.py): one home, read by the eval pipeline, chosen on dev."""

import json

import pytest

from oppu_hub import protocol
from oppu_hub.pipeline import Pipeline
from oppu_hub.pipeline_config import PipelineConfig
from oppu_hub.tuned import user_defaults


@pytest.mark.parametrize(("scores", "higher", "chosen"), [
    ([0.5, 0.6, 0.7], True, 3),   # still improving at the last epoch tried
    ([0.5, 0.6, 0.6], True, 2),   # a tie is no improvement
    ([0.5, 0.4, 0.9], True, 1),   # the curve stops at the first drop, whatever comes later
    ([0.9, 0.7, 0.8], False, 2),  # MAE: lower is better
    ([0.3], True, 1),
])
def test_epochs_stop_where_the_dev_curve_stops_improving(scores, higher, chosen):
    assert protocol.choose_epochs(scores, higher) == chosen


def test_every_task_has_choices_and_sparse_tasks_take_the_fallback():
    table = protocol.choices()
    assert protocol.FALLBACK_TASK in table
    for task in ("LaMP-1", "LaMP-2N", "LaMP-2M", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-7"):
        assert protocol.base_epochs(task) >= 1 and user_defaults(task).learning_rate > 0
    assert "LaMP-2M" not in table and "LaMP-3" not in table  # 1 and 2 dev users: nothing chosen on them
    assert protocol.task_choices("LaMP-3") == table[protocol.FALLBACK_TASK]


def test_the_pipeline_defaults_are_the_protocol(lamp2n_dir, tmp_path):
    config = PipelineConfig(data_dir=str(lamp2n_dir), workdir=str(tmp_path))
    assert config.base.max_examples == protocol.BASE_MAX_EXAMPLES
    assert config.base.per_device_train_batch_size == protocol.BASE_BATCH_SIZE
    assert config.base.learning_rate == protocol.BASE_LEARNING_RATE
    assert config.user.max_history == protocol.USER_MAX_HISTORY
    assert config.base.num_train_epochs is None  # unset: the task's dev choice
    base, hashed = Pipeline(config, "LaMP-2N").base_config(0)
    assert base.num_train_epochs == protocol.base_epochs("LaMP-2N") == hashed["num_train_epochs"]
    explicit = PipelineConfig(data_dir=str(lamp2n_dir), workdir=str(tmp_path))
    explicit.base.num_train_epochs = protocol.base_epochs("LaMP-2N")
    # An explicit value equal to the choice names the same base folder: a dev run's base is the leaderboard's.
    assert Pipeline(explicit, "LaMP-2N").base_config(0)[0].output_dir == base.output_dir


def test_a_recorded_choice_merges_into_the_task_entry(tmp_path):
    path = tmp_path / "protocol.json"
    path.write_text(json.dumps({"LaMP-2N": {"base_epochs": 2.0, "user": {"learning_rate": 1e-3}}}))
    protocol.record_choice("LaMP-7", {"base_epochs": 1.0}, path)
    protocol.record_choice("lamp2n", {"base_epochs": 3.0}, path)
    table = json.loads(path.read_text())
    assert table == {"LaMP-2N": {"base_epochs": 3.0, "user": {"learning_rate": 1e-3}}, "LaMP-7": {"base_epochs": 1.0}}
    assert not list(tmp_path.glob("*.tmp"))


def test_train_users_takes_the_tasks_tuned_settings_and_flags_win():
    from oppu_hub.cli import build_parser, config_from_args
    from trainers import UserAdapterConfig

    def parsed(*flags):
        return config_from_args(UserAdapterConfig, build_parser().parse_args(["train-users", *flags]))

    for task in ("LaMP-5", "LaMP-2N", "LaMP-3"):
        tuned = user_defaults(task)
        config = parsed("--task", task)
        assert (config.learning_rate, config.num_train_epochs, config.target_modules, config.lora_r,
                config.lora_alpha) == (tuned.learning_rate, tuned.num_train_epochs, list(tuned.target_modules),
                                       tuned.lora_r, tuned.lora_r)
        assert config == UserAdapterConfig.for_task(task)  # the Python API resolves the same way
    given = parsed("--task", "LaMP-5", "--learning_rate", "0.01", "--lora_r", "4")
    assert (given.learning_rate, given.lora_r, given.lora_alpha) == (0.01, 4, 4)  # alpha follows the rank given
    assert UserAdapterConfig.for_task("LaMP-5", learning_rate=0.01, lora_r=4) == given


def test_train_users_help_shows_the_tasks_defaults(capsys):
    from oppu_hub.cli import main

    with pytest.raises(SystemExit):
        main(["train-users", "--task", "LaMP-5", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"peak learning rate (default: {user_defaults('LaMP-5').learning_rate})" in text
