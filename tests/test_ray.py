"""``train-users --ray`` and ``predict --ray`` on a real local Ray cluster of two nodes (separate processes):
the adapters equal the single-machine ones (both with the default, concurrent LoRA executor), a worker killed
mid-user costs nothing but a retry, re-runs skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_lamp2n
from oppu_hub.adapters import is_complete
from oppu_hub.cli import main
from oppu_hub.distributed import train_users_on_ray
from oppu_hub.distributed_config import RayOptions
from oppu_hub.inference import PredictConfig, predict, save_predictions
from trainers import UserAdapterConfig, train_users

try:
    import ray
except ImportError:  # the cluster tests skip and say why; the no-Ray test still runs
    ray = None

USERS = ["u0", "u1", "u2", "u3"]
CRASH_USER = "u1"
FAST = dict(task="LaMP-2N", learning_rate=0.02, num_train_epochs=1, per_device_train_batch_size=3, logging_steps=1,
            precision="fp32")
MB = 2**20


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node, one CPU each, no dashboard, small object stores."""
    if ray is None:
        pytest.skip("Ray is not installed (pip install 'oppu-hub[ray]')")
    from ray.cluster_utils import Cluster

    try:
        cluster = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=1, object_store_memory=100 * MB, include_dashboard=False))
        cluster.add_node(num_cpus=1, object_store_memory=100 * MB)
        cluster.wait_for_nodes()
    except Exception as e:
        pytest.skip(f"Ray cannot start a local cluster on this machine: {type(e).__name__}: {e}")
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lamp2n(tmp_path_factory.mktemp("data"), {"test": len(USERS)})


@pytest.fixture(scope="module")
def single(tmp_path_factory, data, tiny_base):
    """The single-machine run every Ray run must reproduce."""
    config = user_config(data, tiny_base, tmp_path_factory.mktemp("single"))
    assert train_users(config).trained == USERS
    return config.adapters_dir()


def user_config(data: Path, base: Path, out: Path) -> UserAdapterConfig:
    """What ``train-users`` with the ``FAST`` flags trains: the task's tuned settings where FAST gives none."""
    return UserAdapterConfig.for_task(**FAST, data_dir=str(data), base_dir=str(base), output_dir=str(out))


def assert_same_adapters(out: Path, reference: Path) -> None:
    for user in USERS:
        ours = load_file(out / user / "adapter_model.safetensors")
        theirs = load_file(reference / user / "adapter_model.safetensors")
        assert ours.keys() == theirs.keys()
        for name, tensor in theirs.items():
            # Workers use one torch thread and train one user at a time, the single-machine run all cores and
            # its users together (the default): float sums in another order.
            assert torch.allclose(ours[name], tensor, rtol=1e-4, atol=1e-5), (user, name)
        assert not all(torch.count_nonzero(t) == 0 for n, t in theirs.items() if "lora_B" in n)  # it trained


def assert_clean(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["run.json", *USERS]  # no .tmp / .work / .old leftovers
    assert all(is_complete(out / user) for user in USERS)


def test_train_users_and_predict_on_ray_match_single_machine(cluster, data, tiny_base, single, tmp_path, capsys):
    flags = ["--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(tiny_base),
             "--output_dir", str(tmp_path / "ray")] + [a for k, v in FAST.items() if k != "task"
                                                       for a in (f"--{k}", str(v))]
    assert main(["train-users", *flags, "--ray", cluster.address, "--num_workers", "2"]) == 0
    assert "4 trained, 0 updated, 0 skipped, 0 failed" in capsys.readouterr().out
    out = user_config(data, tiny_base, tmp_path / "ray").adapters_dir()
    assert_same_adapters(out, single)
    assert_clean(out)
    run = json.loads((out / "run.json").read_text())
    assert run["trained"] == USERS and not run["failed"] and run["seconds"].keys() == set(USERS)
    assert not ray.is_initialized()  # the command's own connection is closed again
    # A re-run skips every finished user without even joining the cluster.
    assert main(["train-users", *flags, "--ray", "127.0.0.1:1"]) == 0
    assert "0 trained, 0 updated, 4 skipped, 0 failed" in capsys.readouterr().out
    # predict --ray: the same predictions file as one machine, users spread over both workers.
    common = dict(task="LaMP-2N", data_dir=str(data), base_dir=str(tiny_base), adapters_dir=str(out), batch_size=4)
    config = PredictConfig(**common, output=str(tmp_path / "single.json"))
    expected = predict(config)
    _, expected_scores = save_predictions(config, expected)
    assert main(["predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(tiny_base),
                 "--adapters_dir", str(out), "--batch_size", "4", "--output", str(tmp_path / "ray.json"),
                 "--ray", cluster.address, "--max_adapters", "2"]) == 0
    written = json.loads((tmp_path / "ray.json").read_text())
    assert written == json.loads((tmp_path / "single.json").read_text())
    assert len(expected) == len(USERS) and expected_scores is not None


def test_without_ray_flag_nothing_imports_ray():
    code = ("import sys; from oppu_hub.cli import build_parser; from oppu_hub import distributed; "
            "a = build_parser().parse_args(['train-users', '--num_workers', '2']); "
            "assert a.ray is None and 'ray' not in sys.modules, sorted(m for m in sys.modules if 'ray' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)  # distributed imports torch and trl


def crash_hook() -> None:
    """Ray's ``worker_process_setup_hook`` in the crash test: the first worker to save ``CRASH_USER``'s adapter
    writes half of it into its temporary folder and dies (``os._exit``, as a killed process); every save that
    completes is logged, so the test can count how often each user was trained."""
    crash_dir = os.environ.get("OPPU_TEST_CRASH_DIR")
    if not crash_dir:
        return
    from safetensors.torch import save_file

    from oppu_hub.io import atomic_dir
    from trainers.concurrent import ConcurrentLoraTrainer

    original = ConcurrentLoraTrainer._save

    def save(self, s, slot):
        folder = Path(slot.job.folder)
        marker = Path(crash_dir) / f"{folder.name}.crashed"
        if folder.name == CRASH_USER and not marker.exists():
            marker.write_text(str(os.getpid()))
            with atomic_dir(folder) as tmp:
                save_file(self.adapter_state(s), str(tmp / "adapter_model.safetensors"))
                os._exit(1)
        original(self, s, slot)
        with open(Path(crash_dir) / "saved.log", "a") as f:
            f.write(f"{folder.name} {os.getpid()}\n")

    ConcurrentLoraTrainer._save = save


def test_a_worker_killed_mid_user_is_retried_elsewhere(cluster, data, tiny_base, single, tmp_path):
    crash_dir = tmp_path / "crash"
    crash_dir.mkdir()
    ray.init(address=cluster.address, runtime_env={
        "env_vars": {"OPPU_TEST_CRASH_DIR": str(crash_dir), "PYTHONPATH": str(Path(__file__).parent)},
        "worker_process_setup_hook": "test_ray.crash_hook"})
    try:
        config = user_config(data, tiny_base, tmp_path / "ray")
        report = train_users_on_ray(config, RayOptions(ray=cluster.address, num_workers=2, max_retries=2))
        assert ray.is_initialized()  # the caller's connection is reused and left open
    finally:
        ray.shutdown()
    assert (crash_dir / f"{CRASH_USER}.crashed").exists()  # a worker really died inside CRASH_USER's save
    saves = dict(line.split() for line in (crash_dir / "saved.log").read_text().splitlines())
    assert len(saves) == len((crash_dir / "saved.log").read_text().splitlines())  # no user saved twice
    assert sorted(saves) == USERS  # every user's adapter was saved exactly once
    assert saves[CRASH_USER] != (crash_dir / f"{CRASH_USER}.crashed").read_text()  # by another worker process
    assert report.trained == USERS and not report.failed
    out = config.adapters_dir()
    assert json.loads((out / "run.json").read_text())["trained"] == USERS
    assert_clean(out)  # the dead worker's half-written temporary folder is gone, nothing partial remains
    assert_same_adapters(out, single)


def test_workers_that_cannot_load_the_base_fail_the_command(cluster, data, tmp_path, capsys):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    assert main(["train-users", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(empty),
                 "--output_dir", str(tmp_path / "out"), "--ray", cluster.address, "--num_workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: no Ray worker could start:" in err and "not-a-model" in err  # the loading error, named
    assert not ray.is_initialized()
