"""Reliability: crash-safe folder replacement, owner-only files, ``--update`` bookkeeping and refusals, the base's
task check, deleting a user (the right to be forgotten), Hub faults during a push, and bad inputs on the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import REPO, make_lamp2n, make_random_adapter, user_config
from hub_server import ALICE, ALICE_READ_ONLY, BOB
from oppu_hub.adapters import AdapterRecord
from oppu_hub.forget import ForgetIncompleteError, forget_user
from oppu_hub.hub_store import HubStore
from oppu_hub.io import atomic_dir, remove_stale_temps
from oppu_hub.local_store import LocalStore
from oppu_hub.models import model_fingerprint
from oppu_hub.store_base import StoreUploadError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from hub_fixtures import HubEnv

pytest_plugins = ("hub_fixtures",)


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: sha256 of files, ``dir`` for folders."""
    return {p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def assert_owner_only(folder: Path) -> None:
    bad = {p.as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]
           if stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert not bad, f"readable by group/others: {bad}"


def cli(*argv: str) -> int:
    from oppu_hub.cli import main

    return main(list(argv))


# ---------------------------------------------------------------------------------------------------------------
# atomic_dir: a crash at any point keeps a whole adapter under the final name
# ---------------------------------------------------------------------------------------------------------------
CRASHING_WRITER = """
import os, shutil, sys
from oppu_hub.io import atomic_dir

target, step = sys.argv[1], sys.argv[2]
real_replace, real_rmtree, replaces = os.replace, shutil.rmtree, []

def replace(src, dst):
    replaces.append(dst)
    if step == "between-renames" and len(replaces) == 2:
        os._exit(9)  # killed after the old folder was set aside, before the new one is renamed in
    real_replace(src, dst)

def rmtree(path, *a, **kw):
    if step == "before-cleanup" and ".old-" in str(path):
        os._exit(9)  # killed after the new folder is in place, before the old copy is deleted
    real_rmtree(path, *a, **kw)

os.replace, shutil.rmtree = replace, rmtree
with atomic_dir(target, overwrite=True, mode=0o700) as tmp:
    (tmp / "adapter.bin").write_bytes(b"new weights")
"""


def write_adapter(folder: Path, content: bytes) -> Path:
    with atomic_dir(folder, mode=0o700) as tmp:
        (tmp / "adapter.bin").write_bytes(content)
    return folder


def crash(target: Path, step: str) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(target), step], cwd=REPO, timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr


@pytest.mark.parametrize("recover", ["remove_stale_temps", "next_atomic_dir"])
def test_crash_between_the_renames_keeps_the_old_adapter(tmp_path, recover):
    target = write_adapter(tmp_path / "u1", b"old weights")
    crash(target, "between-renames")
    assert not target.exists()  # the crash left no folder under the final name...
    (old,) = tmp_path.glob(".u1.old-*")  # ...but the old one set aside, and the unfinished new one
    assert (old / "adapter.bin").read_bytes() == b"old weights" and list(tmp_path.glob(".u1.*.tmp"))
    if recover == "remove_stale_temps":  # what train-users runs first
        remove_stale_temps(tmp_path)
        assert (target / "adapter.bin").read_bytes() == b"old weights"
    else:
        with pytest.raises(FileExistsError):  # recovered first, so it is not silently overwritten
            write_adapter(target, b"other")
        assert (target / "adapter.bin").read_bytes() == b"old weights"
        remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u1"]  # no temporaries left


def test_a_store_repo_left_aside_by_a_crash_is_put_back_on_the_next_read(tmp_path):
    store = LocalStore(tmp_path / "store", "ns")
    folder = bare_adapter_folder(tmp_path)
    first = store.push(folder)
    repo = Path(first.url)
    crash(repo, "between-renames")
    assert not repo.exists()
    assert store.history("ns/oppu-lamp-2n-u1") == [first.revision] and repo.is_dir()  # the old version is back
    assert store.push(folder).new_revision is False  # with its history: the same push is recognised


def bare_adapter_folder(tmp_path: Path) -> Path:
    """A folder that verifies as an adapter (a rank-1 LoRA of one 2x2 layer) without any model behind it."""
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 1}))
    layer = "base_model.model.layer"
    save_file({f"{layer}.lora_A.weight": np.ones((1, 2), np.float32),
               f"{layer}.lora_B.weight": np.ones((2, 1), np.float32)}, str(folder / "adapter_model.safetensors"))
    AdapterRecord(user_id="u1", task="LaMP-2N", base_model="b", base_fingerprint="f").save(folder)
    return folder


def test_crash_after_the_new_adapter_is_in_place_keeps_the_new_one(tmp_path):
    target = write_adapter(tmp_path / "u1", b"old weights")
    crash(target, "before-cleanup")
    assert (target / "adapter.bin").read_bytes() == b"new weights" and list(tmp_path.glob(".u1.old-*"))
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u1"]
    assert (target / "adapter.bin").read_bytes() == b"new weights"


def test_a_failing_second_rename_puts_the_old_adapter_back_at_once(tmp_path, monkeypatch):
    target = write_adapter(tmp_path / "u1", b"old weights")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk error (injected)")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="injected"):
        _overwrite(target)
    monkeypatch.undo()
    assert (target / "adapter.bin").read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u1"]


def _overwrite(target: Path) -> None:
    with atomic_dir(target, overwrite=True, mode=0o700) as tmp:
        (tmp / "adapter.bin").write_bytes(b"new weights")


def test_files_and_folder_are_flushed_before_the_rename(tmp_path, monkeypatch):
    target = write_adapter(tmp_path / "u1", b"old weights")
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_dir(target, overwrite=True, mode=0o700) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(b"new")
        (tmp / "adapter.bin").write_bytes(b"new weights")
    monkeypatch.undo()
    first_rename = next(i for i, (kind, _) in enumerate(events) if kind == "replace")
    flushed = {path for kind, path in events[:first_rename] if kind == "fsync"}
    assert {str(tmp / "adapter.bin"), str(tmp / "sub" / "weights.bin"), str(tmp / "sub"), str(tmp)} <= flushed
    assert events[-1] == ("fsync", str(tmp_path))  # the parent folder, after the renames
    assert_owner_only(target)


# ---------------------------------------------------------------------------------------------------------------
# Owner-only permissions of training folders and caches
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("concurrent", [1, 2], ids=["sequential", "concurrent"])
def test_training_folders_and_profiles_are_owner_only(tmp_path, tiny_base, monkeypatch, concurrent):
    from oppu_hub.profiles import ProfileStore
    from trainers import train_users
    from trainers.concurrent import ConcurrentLoraTrainer
    from trainers.user import UserAdapterTrainer

    data = make_lamp2n(tmp_path / "data", {"test": 2}, history=4)
    config = user_config(data, tiny_base, tmp_path / "runs" / "users", num_train_epochs=2, concurrent=concurrent)
    trainer = UserAdapterTrainer if concurrent == 1 else ConcurrentLoraTrainer
    orig, calls = trainer._save_checkpoint, {"n": 0}

    def crash_on_second_checkpoint(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return orig(self, *a, **kw)

    monkeypatch.setattr(trainer, "_save_checkpoint", crash_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_users(config)
    out = config.adapters_dir()
    work = out / ".u0.work"
    assert list(work.glob("*checkpoint*/*"))  # optimizer state and the data order of the user's first epoch
    assert_owner_only(out)  # the adapters folder, the work folder and its checkpoint files
    monkeypatch.undo()
    train_users(config)
    assert (out / "u0" / "oppu.json").is_file() and (out / "u1" / "oppu.json").is_file()
    assert_owner_only(out)

    ProfileStore(tmp_path / "profiles", "LaMP-2N").put("u0", "likes harbors", {})
    assert_owner_only(tmp_path / "profiles")


# ---------------------------------------------------------------------------------------------------------------
# --update: new items sharing the last date, records from before trained_item_ids, refusals
# ---------------------------------------------------------------------------------------------------------------
def same_date_data(folder: Path, history: int) -> Path:
    """One LaMP-2N test user whose history items all carry the same date (LaMP-5's dates are years)."""
    make_lamp2n(folder, {"test": 1}, history=history)
    path = folder / "LaMP-2N" / "test_questions.json"
    questions = json.loads(path.read_text())
    for q in questions:
        for item in q["profile"]:
            item["date"] = "2019"
    path.write_text(json.dumps(questions))
    return folder


@pytest.fixture
def dataset_sizes(monkeypatch):
    """The number of rows of each user job that is trained (whichever executor trains it)."""
    import trainers.runs

    sizes: list[int] = []
    orig = trainers.runs.plan_job

    def spy(*a, **kw):
        job = orig(*a, **kw)
        if job is not None:
            sizes.append(len(job.rows))
        return job

    monkeypatch.setattr(trainers.runs, "plan_job", spy)
    return sizes


@pytest.mark.parametrize("old_record", [False, True], ids=["trained_item_ids", "record-without-the-list"])
def test_update_trains_new_items_that_share_the_last_date(tmp_path, tiny_base, dataset_sizes, old_record):
    from trainers import train_users

    out = tmp_path / "out"
    train_users(user_config(same_date_data(tmp_path / "small", 4), tiny_base, out, num_train_epochs=1))
    folder = out / "LaMP-2N" / "k0-lora" / "u0"
    first = AdapterRecord.from_folder(folder)
    assert first.trained_item_ids == ["u0-0", "u0-1", "u0-2", "u0-3"]
    if old_record:  # as written before trained_item_ids existed
        data = json.loads((folder / "oppu.json").read_text())
        del data["trained_item_ids"]
        (folder / "oppu.json").write_text(json.dumps(data))
    grown = same_date_data(tmp_path / "grown", 6)
    config = user_config(grown, tiny_base, out, num_train_epochs=1, update=True)
    assert train_users(config).updated == ["u0"]
    assert dataset_sizes == [4, 2]  # exactly the two new items, though their date equals the last one's
    second = AdapterRecord.from_folder(folder)
    assert second.trained_item_ids == [f"u0-{j}" for j in range(6)] and second.num_history_items == 6
    assert train_users(config).skipped == ["u0"] and dataset_sizes == [4, 2]


def other_base(tiny_base: Path, folder: Path) -> Path:
    """The tiny base's architecture and tokenizer with other weights."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(99)
    LlamaForCausalLM(AutoConfig.from_pretrained(tiny_base)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(folder)
    return folder


def test_update_refuses_another_base_or_setting(tmp_path, tiny_base, dataset_sizes):
    from trainers import train_users

    out = tmp_path / "out"
    small = make_lamp2n(tmp_path / "small", {"test": 1}, history=3)
    train_users(user_config(small, tiny_base, out, num_train_epochs=1))
    folder = out / "LaMP-2N" / "k0-lora" / "u0"
    before = tree(folder)
    grown = make_lamp2n(tmp_path / "grown", {"test": 1}, history=5)
    report = train_users(user_config(grown, other_base(tiny_base, tmp_path / "base-b"), out, update=True))
    assert report.failed["u0"].startswith("AdapterBaseMismatchError") and "was trained on base" in report.failed["u0"]
    assert str(folder) in report.failed["u0"] and tree(folder) == before and dataset_sizes == [3]

    record = AdapterRecord.from_folder(folder)
    record.profile = True  # as if trained with profiles
    record.save(folder)
    before = tree(folder)
    report = train_users(user_config(grown, tiny_base, out, update=True))
    assert "trained with profile=True (requested False)" in report.failed["u0"]
    assert tree(folder) == before and dataset_sizes == [3]


# ---------------------------------------------------------------------------------------------------------------
# The base's task and prompt variant
# ---------------------------------------------------------------------------------------------------------------
def test_train_users_refuses_a_base_adapted_for_another_task_or_variant(tmp_path, tiny_base, capsys):
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    (base / "oppu_base.json").write_text(json.dumps({"task": "LaMP-2N", "variant": "k0", "k": 0, "profile": False}))
    data = make_lamp2n(tmp_path / "data", {"test": 1}, history=3)
    out = tmp_path / "out"
    common = ["train-users", "--data_dir", str(data), "--base_dir", str(base), "--output_dir", str(out)]
    assert cli(*common, "--task", "LaMP-5") == 2
    err = capsys.readouterr().err
    assert f"{base / 'oppu_base.json'}: this base was task-adapted with task 'LaMP-2N' (requested 'LaMP-5')" in err
    assert len(err.strip().splitlines()) == 1
    assert cli(*common, "--task", "LaMP-2N", "--k", "1") == 2
    assert "k 0 (requested 1)" in capsys.readouterr().err
    assert cli(*common, "--task", "LaMP-2N", "--profile") == 2
    assert "profile False (requested True)" in capsys.readouterr().err
    assert not out.exists()  # nothing was written
    assert cli(*common, "--task", "LaMP-2N", "--num_train_epochs", "1") == 0  # the matching task and variant
    plain = ["train-users", "--data_dir", str(data), "--base_dir", str(tiny_base), "--output_dir", str(out)]
    assert cli(*plain, "--task", "LaMP-2N", "--k", "1", "--num_train_epochs", "1") == 0  # no record: any variant


# ---------------------------------------------------------------------------------------------------------------
# Deleting a user: local folders, a local store, the Hub
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapter_template(tiny_base, tmp_path_factory) -> Path:
    return make_random_adapter(tiny_base, tmp_path_factory.mktemp("adapter"))


def adapter(template: Path, dest: Path, user_id: str, task: str = "LaMP-2N") -> Path:
    shutil.copytree(template, dest)
    record = AdapterRecord.from_folder(dest)
    record.user_id, record.task = user_id, task
    record.save(dest)
    return dest


def runs_tree(template: Path, runs: Path) -> None:
    """What a project keeps about users u1 and u2 (and u10, whose name starts like u1's)."""
    from oppu_hub.profiles import ProfileStore

    users = runs / "users" / "LaMP-2N" / "k0-lora"
    for user in ("u1", "u2", "u10"):
        adapter(template, users / user, user)
        ProfileStore(runs / "profiles", "LaMP-2N").put(user, f"profile of {user}", {})
    adapter(template, runs / "users" / "LaMP-3" / "k1-lora" / "u1", "u1", "LaMP-3")
    ProfileStore(runs / "eval" / "profiles" / "abc123", "LaMP-3").put("u1", "profile of u1", {})
    (users / ".u1.work" / "checkpoint-1").mkdir(parents=True)
    (users / ".u1.work" / "checkpoint-1" / "optimizer.pt").write_bytes(b"state")
    (users / ".u1.x1y2.tmp").mkdir()
    (users / ".u10.work").mkdir()
    (users / "run.json").write_text(json.dumps({"trained": ["u1", "u2", "u10"], "updated": [], "skipped": [],
                                                "failed": {"u1": "boom"}, "seconds": {"u1": 1.0, "u2": 2.0}}))
    results = runs / "eval" / "results" / "LaMP-2N"
    results.mkdir(parents=True)
    (results / "users.json").write_text(json.dumps({"q1": "u1", "q2": "u2", "q3": "u1"}))
    for name in ("golds", "oppu-k0"):
        golds = [{"id": q, "output": "sports"} for q in ("q1", "q2", "q3")]
        (results / f"{name}.json").write_text(json.dumps({"task": "LaMP_2", "golds": golds}))
    (results / "timings.json").write_text(json.dumps({"oppu-k0": 1.5}))
    shutil.copytree(runs / "users" / "LaMP-2N" / "k0-lora" / "u2", runs / "base" / "u1")  # named u1, not u1's


def test_delete_removes_everything_of_one_user_locally(adapter_template, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs_tree(adapter_template, runs)
    store = LocalStore(tmp_path / "store", "lab")
    for user, task in [("u1", "LaMP-2N"), ("u1", "LaMP-3"), ("u2", "LaMP-2N")]:
        store.push(adapter(adapter_template, tmp_path / f"push-{user}-{task}", user, task))
    before = tree(runs)

    delete = ["delete", "--user", "u1", "--roots", str(runs), "--store", str(tmp_path / "store"), "--namespace", "lab"]
    assert cli(*delete) == 0
    out = capsys.readouterr().out
    after = tree(runs)
    gone = set(before) - set(after)
    assert {p.split("/")[-1] for p in gone if p.count("/") <= 4} >= {"u1", ".u1.work", ".u1.x1y2.tmp", "u1.json"}
    assert all("/u1" in p or "/.u1." in p for p in gone)
    assert not any(p.endswith(("/u1", "/u1.json")) or "/.u1." in p for p in after if not p.startswith("base/"))
    assert "base/u1/oppu.json" in after  # a folder named u1 holding someone else's record stays
    for kept in ("users/LaMP-2N/k0-lora/u2/oppu.json", "users/LaMP-2N/k0-lora/u10/oppu.json",
                 "users/LaMP-2N/k0-lora/.u10.work", "profiles/LaMP-2N/u2.json", "profiles/LaMP-2N/u10.json",
                 "eval/results/LaMP-2N/timings.json"):
        assert after[kept] == before[kept], kept
    run = json.loads((runs / "users" / "LaMP-2N" / "k0-lora" / "run.json").read_text())
    assert run == {"trained": ["u2", "u10"], "updated": [], "skipped": [], "failed": {}, "seconds": {"u2": 2.0}}
    results = runs / "eval" / "results" / "LaMP-2N"
    assert json.loads((results / "users.json").read_text()) == {"q2": "u2"}
    for name in ("golds", "oppu-k0"):
        assert json.loads((results / f"{name}.json").read_text())["golds"] == [{"id": "q2", "output": "sports"}]
    assert [r.user for r in store.list()] == ["u2"]
    assert not any("u1" in p.name for p in (tmp_path / "store" / "lab").iterdir())  # no lock file named for u1
    assert "deleted repo lab/oppu-lamp-2n-u1" in out and "deleted repo lab/oppu-lamp-3-u1" in out
    assert f"removed {runs / 'users' / 'LaMP-3' / 'k1-lora' / 'u1'}" in out

    again = tree(runs)
    assert cli(*delete) == 0
    assert "nothing of user 'u1' found" in capsys.readouterr().out and tree(runs) == again
    assert cli("delete", "--user", "u1", "--roots", str(tmp_path / "typo")) == 2
    assert "typo: no such folder" in capsys.readouterr().err


def test_delete_removes_the_users_hub_repos(hub_env: HubEnv, adapter_template, tmp_path, capsys):
    from huggingface_hub import HfApi, constants

    raw = HubStore("alice", endpoint=hub_env.url, token=ALICE, hash_user_ids=False)
    hashed = HubStore("alice", endpoint=hub_env.url, token=ALICE, salt="pepper")
    raw.push(adapter(adapter_template, tmp_path / "a", "u1"))
    hashed_repo = hashed.push(adapter(adapter_template, tmp_path / "b", "u1", "LaMP-3")).repo_id
    raw.push(adapter(adapter_template, tmp_path / "c", "u2"))
    HubStore("lamp-lab", endpoint=hub_env.url, token=ALICE, hash_user_ids=False).push(tmp_path / "a")
    raw.pull("alice/oppu-lamp-2n-u1")  # a cached download
    cached = Path(constants.HF_HUB_CACHE) / "models--alice--oppu-lamp-2n-u1"
    assert cached.is_dir()

    read_only = HubStore("alice", endpoint=hub_env.url, token=ALICE_READ_ONLY, salt="pepper")
    with pytest.raises(ForgetIncompleteError, match="permission denied.*'delete repo'"):
        forget_user("u1", store=read_only)
    assert not cached.exists()  # this machine's copy goes whatever the Hub answers
    api = HfApi(endpoint=hub_env.url, token=ALICE)
    assert len(list(api.list_models(author="alice"))) == 3
    report = forget_user("u1", store=hashed)
    assert report.repos == sorted(["alice/oppu-lamp-2n-u1", hashed_repo])  # raw- and hash-named
    assert sorted(m.id for m in api.list_models(author="alice")) == ["alice/oppu-lamp-2n-u2"]
    assert [m.id for m in api.list_models(author="lamp-lab")] == ["lamp-lab/oppu-lamp-2n-u1"]  # another namespace

    runs = tmp_path / "runs"
    adapter(adapter_template, runs / "users" / "LaMP-2N" / "k0-lora" / "u2", "u2")
    assert cli("delete", "--user", "u2", "--roots", str(runs), "--store", "hub:alice", "--raw_user_ids") == 0
    out = capsys.readouterr().out
    assert "deleted repo alice/oppu-lamp-2n-u2" in out and "k0-lora/u2" in out
    assert list(api.list_models(author="alice")) == [] and not (runs / "users" / "LaMP-2N" / "k0-lora" / "u2").exists()
    assert cli("delete", "--user", "u2", "--roots", str(runs), "--store", "hub:alice") == 2  # hashed, no salt
    assert "OPPU_HUB_USER_SALT" in capsys.readouterr().err


def test_forget_user_is_a_library_function(adapter_template, tmp_path):
    adapter(adapter_template, tmp_path / "u1", "u1")
    report = forget_user("u1", [tmp_path])
    assert report.removed == [tmp_path / "u1"] and report.repos == [] and not (tmp_path / "u1").exists()


# ---------------------------------------------------------------------------------------------------------------
# Hub faults during a push
# ---------------------------------------------------------------------------------------------------------------
FAULTS = {  # endpoint, failure, the step the error names
    "preupload-5xx": ("preupload", dict(status=503, times=6), "preupload"),
    "preupload-dropped": ("preupload", dict(disconnect=True, times=6), "preupload"),
    "preupload-timeout": ("preupload", dict(delay=1.0, times=6), "preupload"),
    "commit-5xx": ("commit", dict(status=500), "commit"),
    "commit-dropped": ("commit", dict(disconnect=True), "commit"),
    "commit-timeout-after-landing": ("commit", dict(delay=1.0), "commit"),
    "make-private-5xx": ("settings", dict(status=502), "make private"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failed_push_changes_nothing_locally_and_a_retry_makes_one_commit(hub_env: HubEnv, adapter_template,
                                                                            tmp_path, monkeypatch, fault):
    from huggingface_hub import HfApi
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", type("NoWait", (), {"sleep": staticmethod(lambda s: None)}))
    endpoint, failure, step = FAULTS[fault]
    api = HfApi(endpoint=hub_env.url, token=ALICE)
    repo_id = "alice/oppu-lamp-2n-u1"
    if endpoint == "settings":
        api.create_repo(repo_id, private=False)
    folder = adapter(adapter_template, tmp_path / "work" / "u1", "u1")
    before = tree(tmp_path / "work")
    store = HubStore("alice", endpoint=hub_env.url, token=ALICE, hash_user_ids=False, timeout=0.3)
    hub_env.hub.fail_next(endpoint, **failure)
    with pytest.raises(StoreUploadError) as error:
        store.push(folder, make_private=True)
    message = str(error.value)
    assert f"push to {repo_id} failed at step '{step}'" in message and "run the push again" in message
    assert tree(tmp_path / "work") == before  # the adapter folder intact, nothing half-written beside it

    result = store.push(folder, make_private=True)
    commits = api.list_repo_commits(repo_id)
    assert len(commits) == 2  # the repo's initial commit and exactly one commit of the adapter
    assert result.revision == commits[0].commit_id and api.model_info(repo_id).private is True
    assert api.hf_hub_download(repo_id, "adapter_model.safetensors", local_dir=tmp_path / "check") and \
        (tmp_path / "check" / "adapter_model.safetensors").read_bytes() == \
        (folder / "adapter_model.safetensors").read_bytes()
    assert tree(tmp_path / "work") == before


def test_a_transient_preupload_failure_is_retried_by_the_client(hub_env: HubEnv, adapter_template, tmp_path,
                                                                monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", type("NoWait", (), {"sleep": staticmethod(lambda s: None)}))
    hub_env.hub.fail_next("preupload", status=503)
    store = HubStore("alice", endpoint=hub_env.url, token=ALICE, hash_user_ids=False)
    result = store.push(adapter(adapter_template, tmp_path / "u1", "u1"))
    assert result.new_revision and hub_env.hub.calls("/preupload/") == 2
    assert len(HfApi(endpoint=hub_env.url, token=ALICE).list_repo_commits(result.repo_id)) == 2


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs on the command line: exit status 2, one line naming the culprit, nothing written
# ---------------------------------------------------------------------------------------------------------------
def _lamp(tmp: Path) -> tuple[Path, list, dict]:
    """A one-user LaMP-2N test split: the data dir, its questions and its outputs (to be broken by a case)."""
    data = make_lamp2n(tmp / "data", {"test": 1}, history=3)
    folder = data / "LaMP-2N"
    return data, json.loads((folder / "test_questions.json").read_text()), \
        json.loads((folder / "test_outputs.json").read_text())


def _write(data: Path, questions: list | None = None, outputs: dict | None = None, raw: bytes | None = None) -> None:
    folder = data / "LaMP-2N"
    if raw is not None:
        (folder / "test_questions.json").write_bytes(raw)
    if questions is not None:
        (folder / "test_questions.json").write_text(json.dumps(questions))
    if outputs is not None:
        (folder / "test_outputs.json").write_text(json.dumps(outputs))


def _item(questions: list) -> dict:
    return questions[0]["profile"][0]


def bad_malformed_json(tmp, data, q, o, base):
    _write(data, raw=b'[{"id": "q0", "input": ')
    return ["predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(base)], "test_questions.json"


def bad_missing_golds(tmp, data, q, o, base):
    _write(data, outputs={**o, "golds": []})
    return ["predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(base)], "no gold output"


def bad_unknown_task(tmp, data, q, o, base):
    return ["predict", "--task", "LaMP-9", "--data_dir", str(data), "--base_dir", str(base)], "LaMP-9"


def bad_unknown_user(tmp, data, q, o, base):
    return ["train-users", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(base),
            "--output_dir", str(tmp / "out"), "--users", "ghost"], "'ghost'"


def bad_empty_history(tmp, data, q, o, base):
    q[0]["profile"] = []
    _write(data, q)
    return ["train-users", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(base),
            "--output_dir", str(tmp / "out")], "empty profile"


def bad_item_missing_keys(tmp, data, q, o, base):
    del _item(q)["text"]
    _write(data, q)
    return ["predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(base)], "u0-0"


def bad_not_utf8(tmp, data, q, o, base):
    _write(data, raw=json.dumps(q).encode().replace(b"harbor", b"harb\xff\xfer"))
    return ["predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(base)], "not UTF-8"


def bad_gold_outside_labels(tmp, data, q, o, base):
    o["golds"][0]["output"] = "astrology"
    _write(data, outputs=o)
    return ["predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(base)], "astrology"


def bad_adapter_of_another_base(tmp, data, q, o, base):
    other = other_base(base, tmp / "other-base")
    adapters = tmp / "adapters"
    make_random_adapter(other, adapters / "u0", user_id="u0")
    return ["predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(base),
            "--adapters_dir", str(adapters)], "trained on base"


def bad_base_of_another_task(tmp, data, q, o, base):
    adapted = tmp / "base-lamp3"
    shutil.copytree(base, adapted)
    (adapted / "oppu_base.json").write_text(json.dumps({"task": "LaMP-3", "variant": "k0", "k": 0,
                                                        "profile": False}))
    return ["train-users", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(adapted),
            "--output_dir", str(tmp / "out")], "oppu_base.json"


def bad_peft_types_mixed_in_a_batch(tmp, data, q, o, base):
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # this setup's own loads are not the CLI's output
    second = {**q[0], "id": f"{q[0]['id']}b", "user_id": "u1"}
    _write(data, questions=[*q, second], outputs={**o, "golds": [*o["golds"], {**o["golds"][0], "id": second["id"]}]})
    adapters = tmp / "adapters"
    make_random_adapter(base, adapters / "u0", user_id="u0")
    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, IA3Config(target_modules=["q_proj", "v_proj"], feedforward_modules=[])).save_pretrained(
        adapters / "u1")
    AdapterRecord(user_id="u1", task="LaMP-2N", base_model=str(base), base_fingerprint=model_fingerprint(model),
                  peft_type="IA3").save(adapters / "u1")
    return ["predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(base),
            "--adapters_dir", str(adapters)], f"{adapters}/u"  # names the folder (load order is either user first)


BAD_INPUTS = [bad_malformed_json, bad_missing_golds, bad_unknown_task, bad_unknown_user, bad_empty_history,
              bad_item_missing_keys, bad_not_utf8, bad_adapter_of_another_base, bad_base_of_another_task,
              bad_gold_outside_labels, bad_peft_types_mixed_in_a_batch]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda f: getattr(f, "__name__", "")[4:])
def test_bad_inputs_fail_with_one_clear_line_and_write_nothing(case, tmp_path, tiny_base, capsys):
    data, questions, outputs = _lamp(tmp_path)
    argv, culprit = case(tmp_path, data, questions, outputs, tiny_base)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}
    if argv[0] == "predict":
        argv += ["--output", str(tmp_path / "predictions.json")]
    assert cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and culprit in err and "Traceback" not in err, err
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")} == before


def test_a_read_only_token_fails_the_push_with_one_line(hub_env: HubEnv, adapter_template, tmp_path, monkeypatch,
                                                        capsys):
    folder = adapter(adapter_template, tmp_path / "u1", "u1")
    before = tree(tmp_path)
    monkeypatch.setenv("HF_TOKEN", ALICE_READ_ONLY)
    assert cli("push", "--folder", str(folder), "--store", "hub:alice", "--raw_user_ids") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "alice/oppu-lamp-2n-u1" in err and "403" in err
    assert tree(tmp_path) == before and hub_env.hub.repos == {}


def test_a_1mb_history_item_is_cut_to_the_prompt_budget_not_fatal(tmp_path, tiny_base, capsys):
    data, questions, _ = _lamp(tmp_path)
    _item(questions)["text"] = "harbor " * 150_000  # ~1 MB
    _write(data, questions)
    out = tmp_path / "predictions.json"
    assert cli("predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(tiny_base), "--k", "1",
               "--output", str(out)) == 0
    assert len(json.loads(out.read_text())["golds"]) == 1 and "1 predictions written" in capsys.readouterr().out


# ===============================================================================================================
# Ratings and prediction files: a LaMP-3 rating is finite and within 1-5 (else refused, naming the file and the
# item), and predict --output replaces no file silently and never an input file of the data
# ===============================================================================================================
def _lamp3(data: Path, gold: str = "4", score: str = "3") -> Path:
    """A LaMP-3 data dir (train and test splits, two users each): the test question ``t0`` has ``gold`` and its
    history item ``t0-h0`` has ``score``."""
    from oppu_hub.data import LampSplit, Question, write_split
    from oppu_hub.tasks import get_task

    task = get_task("LaMP-3")
    for split in ("train", "test"):
        questions = []
        for n in range(2):
            qid = f"{split[:2]}{n}"
            items = [{"id": f"{qid}-h{j}", "text": f"review {j} of {qid}", "score": str(1 + (n + j) % 5),
                      "date": f"2020-01-{j + 1:02d}"} for j in range(3)]
            questions.append(Question(qid, task.format_input(text=f"a product of {qid}"), items, f"u{split}{n}", "2"))
        if split == "test":
            questions[0].gold = gold
            questions[0].profile[0]["score"] = score
        write_split(LampSplit(task, questions), data / task.name, split)
    return data


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "6", "NaN"])
@pytest.mark.parametrize("where", ["gold", "history"])
def test_bad_ratings_are_refused_naming_the_file_and_item(tmp_path, capsys, value, where):
    data = _lamp3(tmp_path / "data", **{"gold" if where == "gold" else "score": value})
    folder = data / "LaMP-3"
    culprit = ("test_outputs.json", "'te0'") if where == "gold" else ("test_questions.json", "'te0-h0'")
    assert cli("data", "validate", "--questions", str(folder / "test_questions.json"),
               "--outputs", str(folder / "test_outputs.json")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(c in err for c in culprit) and value in err, err


@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize("where", ["gold", "history"])
def test_predict_and_eval_refuse_bad_ratings(tmp_path, tiny_base, capsys, value, where):
    data = _lamp3(tmp_path / "data", **{"gold" if where == "gold" else "score": value})
    culprit = "test_outputs.json" if where == "gold" else "test_questions.json"
    runs = [["predict", "--task", "LaMP-3", "--data_dir", str(data), "--base_dir", str(tiny_base),
             "--output", str(tmp_path / "predictions.json")],
            ["eval", "--data_dir", str(data), "--workdir", str(tmp_path / "work"), "--tasks", "LaMP-3",
             "--methods", "user-majority"]]
    for argv in runs:
        assert cli(*argv) == 2, argv[0]
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert "mae=nan" not in captured.out and len(err.splitlines()) == 1 and culprit in err, err
    assert not (tmp_path / "predictions.json").exists()


def test_predict_output_replaces_no_file_silently_and_never_an_input(tmp_path, tiny_base, capsys):
    data, _, _ = _lamp(tmp_path)
    inputs = {p: p.read_bytes() for p in (data / "LaMP-2N").iterdir()}
    out = tmp_path / "predictions.json"
    out.write_text("mine")
    predict = ["predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(tiny_base)]
    assert cli(*predict, "--output", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{out} exists" in err and "--overwrite" in err
    assert out.read_text() == "mine"
    link = tmp_path / "link.json"
    link.symlink_to(data / "LaMP-2N" / "test_questions.json")
    for target in (data / "LaMP-2N" / "test_outputs.json", data / "LaMP-2N" / "test_questions.json",
                   data / "LaMP-2N" / "dev_outputs.json", link):  # dev_outputs.json: absent, an input still
        assert cli(*predict, "--output", str(target), "--overwrite") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "input file" in err, err
    assert {p: p.read_bytes() for p in (data / "LaMP-2N").iterdir()} == inputs
    assert cli(*predict, "--output", str(out), "--overwrite") == 0
    assert json.loads(out.read_text())["task"] == "LaMP_2N" and "1 predictions written" in capsys.readouterr().out


# ===============================================================================================================
# Deleting a user is all-or-reported: the plan first, then store repos, this machine's downloads (whatever the Hub
# answers) and local files; what is left is named on one line (exit 2) and a rerun finishes; "not allowed to see"
# is told apart from "not found"
# ===============================================================================================================
def _users_data(template: Path, hub_env: HubEnv, tmp_path: Path) -> tuple[Path, HfApi]:
    """u1's repos in alice's namespace (LaMP-2N and LaMP-3, raw ids), alice's cached download of the first, and
    u1's and u2's local adapters with their run.json entries; returns the runs folder and alice's HfApi."""
    from huggingface_hub import HfApi

    store = HubStore("alice", endpoint=hub_env.url, token=ALICE, hash_user_ids=False)
    store.push(adapter(template, tmp_path / "push-2n", "u1"))
    store.push(adapter(template, tmp_path / "push-3", "u1", "LaMP-3"))
    store.pull("alice/oppu-lamp-2n-u1")
    runs = tmp_path / "runs"
    users = runs / "users" / "LaMP-2N" / "k0-lora"
    for user in ("u1", "u2"):
        adapter(template, users / user, user)
    (users / "run.json").write_text(json.dumps({"trained": ["u1", "u2"], "seconds": {"u1": 1.0, "u2": 2.0}}))
    return runs, HfApi(endpoint=hub_env.url, token=ALICE)


def _cached() -> list[str]:
    from huggingface_hub import constants

    return sorted(p.name for p in Path(constants.HF_HUB_CACHE).glob("models--*"))


@pytest.mark.parametrize("landed", [False, True], ids=["lost-request", "lost-answer"])
def test_a_dropped_answer_during_delete_is_reported_and_a_rerun_finishes(hub_env: HubEnv, adapter_template,
                                                                         tmp_path, capsys, landed):
    runs, api = _users_data(adapter_template, hub_env, tmp_path)
    assert _cached() == ["models--alice--oppu-lamp-2n-u1"]
    capsys.readouterr()
    delete = ["delete", "--user", "u1", "--roots", str(runs), "--store", "hub:alice", "--raw_user_ids"]
    hub_env.hub.fail_next("delete", disconnect=True, after=landed)  # the first repo delete gets no answer
    assert cli(*delete) == 2
    out, err = capsys.readouterr()
    plan = [line for line in out.splitlines() if line.startswith("to ")]
    assert out.startswith("\n".join(plan)) and len(plan) == 6, out  # the whole plan comes first
    assert {"to delete: repo alice/oppu-lamp-2n-u1", "to delete: repo alice/oppu-lamp-3-u1"} <= \
        {line.split(" (")[0] for line in plan}
    assert sum("models--alice--oppu-lamp-2n-u1 (this machine's download" in line for line in plan) == 2  # + .locks
    assert f"to remove: {runs / 'users' / 'LaMP-2N' / 'k0-lora' / 'u1'}" in plan
    assert f"to remove the user's entries from: {runs / 'users' / 'LaMP-2N' / 'k0-lora' / 'run.json'}" in plan
    assert "deleted repo alice/oppu-lamp-3-u1" in out and "not deleted: repo alice/oppu-lamp-2n-u1" in out
    assert len(err.strip().splitlines()) == 1 and "alice/oppu-lamp-2n-u1" in err and "run the same delete" in err
    # everything else is gone: the other repo, the cached copy, the local adapter and its run.json entries
    left = sorted(m.id for m in api.list_models(author="alice"))
    assert left == ([] if landed else ["alice/oppu-lamp-2n-u1"]) and _cached() == []
    users = runs / "users" / "LaMP-2N" / "k0-lora"
    assert not (users / "u1").exists() and (users / "u2" / "oppu.json").is_file()
    assert json.loads((users / "run.json").read_text()) == {"trained": ["u2"], "seconds": {"u2": 2.0}}

    assert cli(*delete) == 0  # the rerun finishes the job
    out = capsys.readouterr().out
    assert ("deleted repo alice/oppu-lamp-2n-u1" in out) != landed
    assert landed == ("nothing of user 'u1' found" in out)
    assert list(api.list_models(author="alice")) == []


def test_a_failed_listing_still_removes_the_cached_and_local_copies_and_says_what_is_left(
        hub_env: HubEnv, adapter_template, tmp_path, monkeypatch, capsys):
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", type("NoWait", (), {"sleep": staticmethod(lambda s: None)}))
    runs, api = _users_data(adapter_template, hub_env, tmp_path)
    delete = ["delete", "--user", "u1", "--roots", str(runs), "--store", "hub:alice", "--raw_user_ids"]
    hub_env.hub.fail_next("list", status=503, times=6)  # the client's retries (5) fail too
    capsys.readouterr()
    assert cli(*delete) == 2
    out, err = capsys.readouterr()
    assert "cannot delete: the user's repos in hub:alice" in out and "503" in out
    assert len(err.strip().splitlines()) == 1 and "503" in err and "run the same delete" in err, err
    assert _cached() == [] and not (runs / "users" / "LaMP-2N" / "k0-lora" / "u1").exists()
    assert len(list(api.list_models(author="alice"))) == 2
    assert cli(*delete) == 0
    assert "deleted repo alice/oppu-lamp-3-u1" in capsys.readouterr().out
    assert list(api.list_models(author="alice")) == []


def test_delete_finds_an_empty_repo_a_failed_push_left(hub_env: HubEnv, adapter_template, tmp_path, capsys):
    from huggingface_hub import HfApi

    store = HubStore("alice", endpoint=hub_env.url, token=ALICE, hash_user_ids=False)
    hub_env.hub.fail_next("commit", status=500)
    with pytest.raises(StoreUploadError):
        store.push(adapter(adapter_template, tmp_path / "u1", "u1"))
    assert list(hub_env.hub.repos) == ["alice/oppu-lamp-2n-u1"]  # named after u1, no card, no tags
    assert forget_user("u1", store=store).repos == ["alice/oppu-lamp-2n-u1"]
    assert list(HfApi(endpoint=hub_env.url, token=ALICE).list_models(author="alice")) == []


@pytest.mark.parametrize("reveal", [False, True], ids=["hub-says-not-found", "hub-says-forbidden"])
def test_delete_tells_not_found_from_not_allowed_to_see(hub_env: HubEnv, adapter_template, tmp_path, monkeypatch,
                                                        capsys, reveal):
    runs, api = _users_data(adapter_template, hub_env, tmp_path)
    hub_env.hub.reveal_private = reveal
    empty = tmp_path / "empty"
    empty.mkdir()
    delete = ["delete", "--user", "u1", "--roots", str(empty), "--store", "hub:alice", "--raw_user_ids"]
    monkeypatch.setenv("HF_TOKEN", BOB)
    capsys.readouterr()
    assert cli(*delete) == 2
    out, err = capsys.readouterr()
    assert "nothing of user" not in out and "cannot delete: the user's repos in hub:alice" in out
    assert "belongs to someone else" in err and "may not write there nor see its private repos" in err, err
    assert len(err.strip().splitlines()) == 1
    assert ("cannot delete: alice/oppu-lamp-3-u1: it exists, but" in out) == reveal
    assert len(list(api.list_models(author="alice"))) == 2  # alice's repos are untouched
    monkeypatch.setenv("HF_TOKEN", ALICE)
    assert cli("delete", "--user", "nobody", "--roots", str(empty), "--store", "hub:alice", "--raw_user_ids") == 0
    assert "nothing of user 'nobody' found" in capsys.readouterr().out


# ===============================================================================================================
# Distinct ids get distinct adapters; adapters verify (files, shapes, sha256, user and task) before they are used,
# and an unverifiable one is replaced; runs sharing a folder skip each other's users and merge run.json
# ===============================================================================================================
CLASHING_IDS = ("../../escape", "escape-c1a232ee")  # the first one's hashed name was the second one verbatim


def test_distinct_ids_get_distinct_names_and_safe_ids_keep_theirs():
    from oppu_hub.adapters import adapter_name
    from oppu_hub.cards import slug
    from oppu_hub.io import safe_name

    for name in (safe_name, slug, adapter_name):
        assert name(CLASHING_IDS[0]) != name(CLASHING_IDS[1]), name.__name__
    assert safe_name("../../escape") == "escape-c1a232ee"  # a hashed name stays what it was
    assert safe_name("escape-c1a232ee").startswith("escape-c1a232ee-")  # an id of the hashed shape is hashed
    assert adapter_name("a_c1a232ee") != "a_c1a232ee" and slug("x-0123abcd") != "x-0123abcd"
    for user in ("u1", "j.smith", "A-1", "user-12345678x", "abc-0123456", "abc-DEADBEEF"):  # safe: unchanged
        assert safe_name(user) == user
    store = LocalStore("unused", "lab", hash_user_ids=False)
    assert store.repo_id(CLASHING_IDS[0], "LaMP-2N") != store.repo_id(CLASHING_IDS[1], "LaMP-2N")


def clashing_data(folder: Path) -> Path:
    """Two LaMP-2N test users named by :data:`CLASHING_IDS`."""
    path = make_lamp2n(folder, {"test": 2}, history=3) / "LaMP-2N" / "test_questions.json"
    questions = json.loads(path.read_text())
    for q, user in zip(questions, CLASHING_IDS, strict=True):
        q["user_id"] = user
    path.write_text(json.dumps(questions))
    return folder


def test_clashing_ids_train_and_predict_their_own_adapters(tmp_path, tiny_base, capsys):
    from oppu_hub.adapters import verify_adapter
    from trainers import train_users

    data = clashing_data(tmp_path / "data")
    config = user_config(data, tiny_base, tmp_path / "out", num_train_epochs=1)
    report = train_users(config)
    assert sorted(report.trained) == sorted(CLASHING_IDS) and not report.failed
    for user in CLASHING_IDS:
        assert verify_adapter(config.adapter_folder(user), user_id=user, task="LaMP-2N").user_id == user
    assert cli("predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(tiny_base),
               "--adapters_dir", str(config.adapters_dir()), "--users", "escape-c1a232ee",
               "--output", str(tmp_path / "p.json")) == 0


def _adapter_in(tmp: Path, base: Path, user_id: str = "u0", **record: object) -> Path:
    return make_random_adapter(base, tmp / "adapters" / user_id, **{"user_id": user_id, **record})


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


DAMAGES = {
    "weights-truncated": (lambda f: _truncate(f / "adapter_model.safetensors"), "adapter_model.safetensors"),
    "weights-empty": (lambda f: _truncate(f / "adapter_model.safetensors", 0), "adapter_model.safetensors"),
    "weights-garbage": (lambda f: (f / "adapter_model.safetensors").write_bytes(os.urandom(1000)),
                        "adapter_model.safetensors"),
    "weights-bit-flipped": (lambda f: _flip_last_byte(f / "adapter_model.safetensors"), "sha256"),
    "weights-of-another-rank": (lambda f: _other_rank(f), "rank"),
    "record-a-list": (lambda f: (f / "oppu.json").write_text("[]"), "oppu.json: not a JSON object"),
    "record-empty": (lambda f: (f / "oppu.json").write_text("{}"), "oppu.json: missing or empty user_id"),
    "record-missing": (lambda f: (f / "oppu.json").unlink(), "missing oppu.json"),
    "config-truncated": (lambda f: _truncate(f / "adapter_config.json"), "adapter_config.json: malformed JSON"),
    "config-missing": (lambda f: (f / "adapter_config.json").unlink(), "missing adapter_config.json"),
}


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside a tensor: the header and shapes still parse
    path.write_bytes(bytes(data))


def _other_rank(folder: Path) -> None:
    config = json.loads((folder / "adapter_config.json").read_text())
    config["r"] = 2 * config["r"]
    (folder / "adapter_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage", DAMAGES, ids=str)
def test_predict_refuses_a_damaged_adapter_naming_its_folder(damage, tmp_path, tiny_base, capsys):
    from oppu_hub.adapters import AdapterCorruptError, is_complete, verify_adapter

    data, _, _ = _lamp(tmp_path)
    folder = _adapter_in(tmp_path, tiny_base)
    assert is_complete(folder) and verify_adapter(folder).weights_sha256  # recorded at save time
    damage_it, culprit = DAMAGES[damage]
    damage_it(folder)
    assert not is_complete(folder)
    with pytest.raises(AdapterCorruptError, match=culprit):
        verify_adapter(folder)
    capsys.readouterr()  # the setup's own output
    assert cli("predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(tiny_base),
               "--adapters_dir", str(folder.parent), "--output", str(tmp_path / "p.json")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(folder) in err and culprit in err and "Traceback" not in err, err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("record", [{"user_id": "u9"}, {"task": "LaMP-3"}], ids=["another-user", "another-task"])
def test_predict_refuses_the_adapter_of_another_user_or_task(record, tmp_path, tiny_base, capsys):
    data, _, _ = _lamp(tmp_path)
    folder = make_random_adapter(tiny_base, tmp_path / "adapters" / "u0", **{"user_id": "u0", **record})
    capsys.readouterr()  # the setup's own output
    assert cli("predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(tiny_base),
               "--adapters_dir", str(folder.parent), "--output", str(tmp_path / "p.json")) == 2
    err = capsys.readouterr().err.strip()
    expected = "of user 'u9', not of 'u0'" if "user_id" in record else "holds a LaMP-3 adapter, not a LaMP-2N one"
    assert len(err.splitlines()) == 1 and str(folder) in err and expected in err, err


def test_a_record_without_a_sha256_verifies_by_its_header_and_shapes(tmp_path, tiny_base):
    from oppu_hub.adapters import verify_adapter

    folder = _adapter_in(tmp_path, tiny_base)
    record = json.loads((folder / "oppu.json").read_text())
    del record["weights_sha256"]  # written before it existed
    (folder / "oppu.json").write_text(json.dumps(record))
    assert verify_adapter(folder, user_id="u0", task="lamp_2n").weights_sha256 is None


@pytest.mark.parametrize("concurrent", [1, 2], ids=["sequential", "concurrent"])
def test_train_users_records_the_sha256_and_replaces_an_unverifiable_adapter(tmp_path, tiny_base, concurrent,
                                                                            caplog):
    from oppu_hub.adapters import verify_adapter
    from trainers import train_users

    data = make_lamp2n(tmp_path / "data", {"test": 1}, history=3)
    config = user_config(data, tiny_base, tmp_path / "out", num_train_epochs=1, concurrent=concurrent)
    assert train_users(config).trained == ["u0"]
    folder = config.adapter_folder("u0")
    weights = (folder / "adapter_model.safetensors").read_bytes()
    assert AdapterRecord.from_folder(folder).weights_sha256 == hashlib.sha256(weights).hexdigest()
    for damage in ("weights-truncated", "record-missing", "config-missing", "weights-bit-flipped"):
        DAMAGES[damage][0](folder)
        caplog.clear()
        report = train_users(config)
        assert report.trained == ["u0"] and not report.failed, (damage, report)  # not "skipped", not stuck
        assert any(str(folder) in r.getMessage() and "replaces it" in r.getMessage() for r in caplog.records)
        assert verify_adapter(folder, user_id="u0", task="LaMP-2N")
        assert sorted(p.name for p in folder.parent.iterdir()) == ["run.json", "u0"]  # replaced whole
    assert train_users(config).skipped == ["u0"]


def test_train_users_refuses_to_replace_the_adapter_of_another_user(tmp_path, tiny_base):
    from trainers import train_users

    data = make_lamp2n(tmp_path / "data", {"test": 1}, history=3)
    config = user_config(data, tiny_base, tmp_path / "out", num_train_epochs=1)
    folder = make_random_adapter(tiny_base, config.adapter_folder("u0"), user_id="someone-else")
    before = tree(folder)
    report = train_users(config)
    assert "AdapterMismatchError" in report.failed["u0"] and "'someone-else'" in report.failed["u0"]
    assert tree(folder) == before


PAUSED_RUN = """
import sys, time
from oppu_hub.cli import main
from trainers.concurrent import ConcurrentLoraTrainer
from trainers.user import UserAdapterTrainer

for cls in (UserAdapterTrainer, ConcurrentLoraTrainer):
    def pause_after_checkpoint(self, *a, _save=cls._save_checkpoint, **kw):
        _save(self, *a, **kw)
        print("checkpointed", flush=True)
        time.sleep(600)  # the test kills this run here, in the middle of training its user
    cls._save_checkpoint = pause_after_checkpoint
main(sys.argv[1:])
"""


@pytest.mark.parametrize("concurrent", [1, 2], ids=["sequential", "concurrent"])
def test_a_second_run_skips_users_another_run_is_training(tmp_path, tiny_base, concurrent, capsys):
    data = make_lamp2n(tmp_path / "data", {"test": 2}, history=3)
    argv = ["train-users", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(tiny_base),
            "--output_dir", str(tmp_path / "out"), "--num_train_epochs", "2", "--per_device_train_batch_size", "3",
            "--precision", "fp32", "--concurrent", str(concurrent)]
    out = user_config(data, tiny_base, tmp_path / "out").adapters_dir()
    with open(tmp_path / "other.log", "w") as log:
        other = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, *argv, "--users", "u0"], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert other.stdout.readline().strip() == "checkpointed", (tmp_path / "other.log").read_text()[-3000:]
        assert cli(*argv) == 0  # while the other run is training u0
        printed = capsys.readouterr().out
        assert "1 trained, 0 updated, 1 skipped, 0 failed" in printed
        assert "skipped u0: being trained by another run" in printed
        assert not (out / "u0").exists() and (out / "u1").is_dir()
        run = json.loads((out / "run.json").read_text())
        assert run["trained"] == ["u1"] and run["skipped"] == ["u0"]
        assert run["notes"] == {"u0": "being trained by another run"}
    finally:
        other.kill()
        other.wait()
    assert cli(*argv) == 0  # the other run died: its claim went with it, and u0 resumes from its checkpoint
    assert "1 trained, 0 updated, 1 skipped, 0 failed" in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["trained"] == ["u0", "u1"] and run["skipped"] == [] and run["notes"] == {}
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "u0", "u1"]  # no lock or work files left


def test_run_json_merges_the_runs_on_one_folder(tmp_path, tiny_base):
    from trainers import train_users

    data = make_lamp2n(tmp_path / "data", {"test": 2}, history=3)
    for user in ("u1", "u0"):
        train_users(user_config(data, tiny_base, tmp_path / "out", num_train_epochs=1, users=[user]))
    out = user_config(data, tiny_base, tmp_path / "out").adapters_dir()
    run = json.loads((out / "run.json").read_text())
    assert run["trained"] == ["u1", "u0"] and run["seconds"].keys() == {"u0", "u1"}
    (out / "run.json").write_text("[]")
    with pytest.raises(ValueError, match="run.json: not a train-users report"):
        train_users(user_config(data, tiny_base, tmp_path / "out", num_train_epochs=1))


def test_locks_and_cleanup_leave_other_processes_work_alone(tmp_path):
    from oppu_hub.io import FileLock, folder_in_use

    lock = FileLock.try_acquire(tmp_path / ".u0.lock")
    assert lock is not None and FileLock.try_acquire(tmp_path / ".u0.lock") is None
    lock.release()
    assert not (tmp_path / ".u0.lock").exists()
    with FileLock.acquire(tmp_path / ".u0.lock"):
        assert FileLock.try_acquire(tmp_path / ".u0.lock") is None
    work = tmp_path / ".u1.abcdefgh.tmp"  # another run's adapter being saved
    work.mkdir()
    with folder_in_use(tmp_path) as ours:
        with folder_in_use(tmp_path) as theirs:
            assert theirs() == [] and ours() == [] and work.is_dir()
        assert ours() == [work] and not work.exists()  # alone in the folder


def test_predictions_get_owner_only_parent_folders(tmp_path, tiny_base):
    data, _, _ = _lamp(tmp_path)
    out = tmp_path / "new" / "deeper" / "predictions.json"
    mode = stat.S_IMODE(tmp_path.stat().st_mode)
    assert cli("predict", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(tiny_base),
               "--output", str(out)) == 0
    assert_owner_only(tmp_path / "new")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == mode  # an existing parent is left as it is
