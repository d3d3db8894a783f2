"""What the comparison tests share (tests/test_compare.py without Gradio, tests/test_space.py and
tests/test_space_oauth.py through the page): small LaMP-2N and LaMP-4 data, users' adapters trained on the tiny
base for each k the columns need, visitors' uploads. Use the fixtures with ``pytest_plugins = ("space_fixtures",)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_lamp2n
from oppu_hub.compare_config import SpaceConfig
from oppu_hub.data import LampSplit, Question, write_split
from oppu_hub.tasks import get_task
from trainers import UserAdapterConfig, train_users

# Fast settings for a visitor's adapter on the tiny random base (the Space defaults are the 135M base's).
FAST_MAKE = dict(train_epochs=8, train_learning_rate=0.02)
LONG_WORDS = ("harbour", "authorities", "announced", "considerable", "renovations", "throughout", "waterfront")


def train_adapters(data: Path, out: Path, base: Path, users: list[str], ks: tuple[int, ...] = (0,),
                   task: str = "LaMP-2N") -> Path:
    """The users' adapters for each k (each column's adapters are trained with its prompts); returns ``out``."""
    for k in ks:
        config = UserAdapterConfig(task=task, data_dir=str(data), base_dir=str(base), k=k, output_dir=str(out),
                                   users=users, per_device_train_batch_size=3, logging_steps=1, precision="fp32",
                                   learning_rate=0.02, num_train_epochs=8,
                                   target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
        report = train_users(config)
        assert sorted(report.trained) == sorted(users) and not report.failed
    return out


def make_lamp4(folder: Path, users: int = 2, history: int = 4) -> Path:
    """A small LaMP-4 test split: articles of long words, each user's headlines long enough to be cut."""
    task = get_task("LaMP-4")
    questions = []
    for n in range(users):
        items = [{"id": f"a{n}-{j}", "text": " ".join(LONG_WORDS * 6) + f" story {j}",
                  "title": f"The {LONG_WORDS[j % 7]} of user {n}: " + " ".join(LONG_WORDS * 2),
                  "date": f"2020-02-{j + 1:02d}"} for j in range(history + 1)]
        query = items.pop()
        questions.append(Question(f"h{n}", task.format_input(text=query["text"]), items, f"w{n}", query["title"]))
    write_split(LampSplit(task, questions), folder / task.name, "test")
    return folder


def write_history(path: Path, n: int = 6, word: str = "lantern", label: str = "sports", lines: bool = True) -> Path:
    """A visitor's upload: ``n`` LaMP-2N history items about ``word``, all labelled ``label`` (JSON Lines, or a
    JSON list)."""
    items = [{"id": f"h{j}", "text": f"{word} story number {j} about the {word}", "title": f"{word} {j}",
              "category": label, "date": f"2021-02-{j + 1:02d}"} for j in range(n)]
    path.write_text("\n".join(json.dumps(i) for i in items) if lines else json.dumps(items))
    return path


@pytest.fixture(scope="session")
def space_models(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> tuple[Path, Path]:
    """(data, adapters): LaMP-2N test users u2 and u3 with adapters for k=0 and k=2 (u4 has none), LaMP-4 user w0
    with a k=0 adapter (w1 has none); adapters in ``{adapters}/{task}/{variant}-lora``."""
    data = make_lamp4(make_lamp2n(tmp_path_factory.mktemp("space-data"), {"train": 2, "test": 3}))
    users = tmp_path_factory.mktemp("space-users")
    train_adapters(data, users, tiny_base, ["u2", "u3"], ks=(0, 2))
    train_adapters(data, users, tiny_base, ["w0"], task="LaMP-4")
    return data, users


@pytest.fixture
def space_config(space_models: tuple[Path, Path], tiny_base: Path, tmp_path: Path):
    """A ``SpaceConfig`` over :func:`space_models` (k=2 first; no prediction files)."""
    data, users = space_models
    return SpaceConfig(data_dir=str(data), base_dir=str(tiny_base),
                       adapters_dir=str(users / "{task}" / "{variant}-lora"), task="LaMP-2N", k=2,
                       predictions_dir=str(tmp_path / "no-predictions" / "{task}"),
                       gains_plot=str(tmp_path / "no-plot.png"), **FAST_MAKE)
