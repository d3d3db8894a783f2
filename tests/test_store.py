"""Adapter stores: the Hub store against a real HTTP Hub API (tests/hub_server.py) driven by the real client
(HfApi, snapshot_download, PeftModel.from_pretrained on a repo id, the ``hf download`` CLI), the local store,
and the ``oppu-hub push/list/pull`` commands on both."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_random_adapter
from hub_server import ALICE, ALICE_READ_ONLY, BOB
from oppu_hub.adapters import AdapterBaseMismatchError, AdapterRecord
from oppu_hub.cards import hash_user_id
from oppu_hub.hub_store import HubStore
from oppu_hub.inference import load_user_adapter
from oppu_hub.local_store import LocalStore
from oppu_hub.store import open_store, push_adapter
from oppu_hub.store_base import (
    AdapterRepoNotFoundError,
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreNamespaceError,
    StorePublicRepoError,
    StoreUploadError,
)

if TYPE_CHECKING:
    from hub_fixtures import HubEnv

pytest_plugins = ("hub_fixtures",)  # the fake_hub and hub_env fixtures

IDS = torch.tensor([[1, 42, 7, 99, 3, 250, 11]])
HF_CLI = Path(sys.executable).with_name("hf")


# ---------------------------------------------------------------------------------------------------------------
# adapters on the tiny base
# ---------------------------------------------------------------------------------------------------------------
def load_tiny(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(scope="session")
def adapter_template(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_adapter(tiny_base, tmp_path_factory.mktemp("adapter"), num_history_items=12, train_loss=1.25,
                               metrics={"accuracy": 0.5, "f1": 0.25})


@pytest.fixture(scope="session")
def expected_logits(tiny_base: Path, adapter_template: Path) -> torch.Tensor:
    from peft import PeftModel

    out = logits(PeftModel.from_pretrained(load_tiny(tiny_base), adapter_template))
    assert not torch.allclose(out, logits(load_tiny(tiny_base))), "the test adapter must change the logits"
    return out


def make_adapter(template: Path, dest: Path, user_id: str = "u1", task: str = "LaMP-2N",
                 scale: float | None = None) -> Path:
    shutil.copytree(template, dest)
    if scale is not None:
        weights = load_file(dest / "adapter_model.safetensors")
        save_file({k: v * scale if "lora_B" in k else v for k, v in weights.items()},
                  dest / "adapter_model.safetensors")
    record = AdapterRecord.from_folder(dest)
    record.user_id, record.task = user_id, task
    record.save(dest)  # after the weights: the record holds their sha256
    return dest


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hub_store(env: HubEnv, namespace: str | None = "alice", token: str | None = ALICE, **kw) -> HubStore:
    """A Hub store on the test server; raw user ids unless ``hash_user_ids`` says otherwise (readable repo ids)."""
    return HubStore(namespace, endpoint=env.url, token=token, **{"hash_user_ids": False, **kw})


def cli(*argv: str) -> int:
    import oppu_hub.cli as cli_module

    return cli_module.main(list(argv))


# ---------------------------------------------------------------------------------------------------------------
# Hub store
# ---------------------------------------------------------------------------------------------------------------
def test_hub_push_then_reload_gives_identical_logits(hub_env: HubEnv, tiny_base, adapter_template,
                                                      expected_logits, tmp_path):
    from huggingface_hub import HfApi
    from peft import PeftModel

    folder = make_adapter(adapter_template, tmp_path / "a")
    before = tree_hashes(folder)
    result = hub_store(hub_env).push(folder)
    assert result.repo_id == "alice/oppu-lamp-2n-u1" and result.new_revision
    assert tree_hashes(folder) == before

    api = HfApi(endpoint=hub_env.url, token=ALICE)
    info = api.model_info(result.repo_id)
    assert info.private is True and info.sha == result.revision
    assert {s.rfilename for s in info.siblings} >= {"adapter_config.json", "adapter_model.safetensors",
                                                    "oppu.json", "README.md"}
    assert len(api.list_repo_commits(result.repo_id)) == 2  # the repo's initial commit + ONE commit for the push
    assert hub_env.hub.calls("/commit/") == 1
    card = api.model_info(result.repo_id).card_data
    assert card.library_name == "peft" and card.pipeline_tag == "text-generation"
    assert set(card.tags) >= {"oppu", "lamp", "lamp-2n", "lora", "user-u1"}
    assert card.base_model is None  # the tiny base is a local folder, not a Hub id

    # The plain client: PeftModel.from_pretrained on the repo id (HF_TOKEN is alice's).
    assert torch.equal(logits(PeftModel.from_pretrained(load_tiny(tiny_base), result.repo_id)), expected_logits)
    # oppu-hub's loader, which also checks the base.
    model = load_user_adapter(load_tiny(tiny_base), hub_store(hub_env), result.repo_id)
    assert torch.equal(logits(model), expected_logits)

    # `hf download` as a user would run it.
    out = tmp_path / "downloaded"
    proc = subprocess.run([str(HF_CLI), "download", result.repo_id, "--local-dir", str(out), "--quiet"],
                          env=hub_env.env(ALICE), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (out / name).read_bytes() == (folder / name).read_bytes()
    assert AdapterRecord.from_folder(out) == AdapterRecord.from_folder(folder)
    assert torch.equal(logits(PeftModel.from_pretrained(load_tiny(tiny_base), out)), expected_logits)


def test_hub_repush_is_a_new_commit_and_old_revisions_stay(hub_env: HubEnv, tiny_base, adapter_template,
                                                           expected_logits, tmp_path):
    store = hub_store(hub_env)
    first = store.push(make_adapter(adapter_template, tmp_path / "v1"))
    second = store.push(make_adapter(adapter_template, tmp_path / "v2", scale=3.0))
    assert second.repo_id == first.repo_id and second.revision != first.revision and second.new_revision
    assert store.history(first.repo_id)[:2] == [second.revision, first.revision]

    old = load_user_adapter(load_tiny(tiny_base), store, first.repo_id, revision=first.revision)
    assert torch.equal(logits(old), expected_logits)
    new = load_user_adapter(load_tiny(tiny_base), store, first.repo_id)
    assert not torch.allclose(logits(new), expected_logits)

    again = store.push(tmp_path / "v2")  # nothing changed: no empty commit
    assert again.revision == second.revision and not again.new_revision
    assert len(store.history(first.repo_id)) == 3


def test_hub_private_repos_need_the_owners_token(hub_env: HubEnv, adapter_template, tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    repo_id = hub_store(hub_env).push(make_adapter(adapter_template, tmp_path / "a")).repo_id
    assert [r.repo_id for r in hub_store(hub_env).list()] == [repo_id]

    monkeypatch.delenv("HF_TOKEN")
    for token in (BOB, None):
        other = hub_store(hub_env, token=token)
        assert other.list() == []
        with pytest.raises(AdapterRepoNotFoundError, match="private"):
            other.pull(repo_id)
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub_env.url, token=token or False).model_info(repo_id)
    proc = subprocess.run([str(HF_CLI), "download", repo_id, "--local-dir", str(tmp_path / "bob")],
                          env=hub_env.env(BOB), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and not (tmp_path / "bob" / "adapter_model.safetensors").exists()


def test_hub_list_filters_by_tags(hub_env: HubEnv, adapter_template, tmp_path):
    store = hub_store(hub_env)
    for user, task in [("u1", "LaMP-2N"), ("u2", "LaMP-2N"), ("u1", "LaMP-3")]:
        store.push(make_adapter(adapter_template, tmp_path / f"{user}-{task}", user, task))
    hub_store(hub_env, "bob", BOB).push(make_adapter(adapter_template, tmp_path / "bob-u1", "u1"))

    assert [r.repo_id for r in store.list()] == ["alice/oppu-lamp-2n-u1", "alice/oppu-lamp-2n-u2",
                                                 "alice/oppu-lamp-3-u1"]
    assert [r.repo_id for r in store.list(task="LaMP-2N")] == ["alice/oppu-lamp-2n-u1", "alice/oppu-lamp-2n-u2"]
    assert [r.repo_id for r in store.list(user_id="u1")] == ["alice/oppu-lamp-2n-u1", "alice/oppu-lamp-3-u1"]
    (ref,) = store.list(user_id="u2", task="LaMP-2N")
    assert (ref.task, ref.user, ref.peft_type, ref.private) == ("LaMP-2N", "u2", "LORA", True)
    assert ref.revision and store.list(user_id="nobody") == []


def test_hub_hashed_user_ids_keep_the_raw_id_out(hub_env: HubEnv, adapter_template, tmp_path):
    raw = "Jane.Doe@example.org"
    store = hub_store(hub_env, hash_user_ids=True, salt="s3cret")
    result = store.push(make_adapter(adapter_template, tmp_path / "a", raw))
    digest = hash_user_id(raw, "s3cret")
    assert result.repo_id == f"alice/oppu-lamp-2n-{digest}"
    pulled = store.pull(result.repo_id)
    for path in pulled.iterdir():
        assert raw.encode() not in path.read_bytes(), path.name
    assert f"user-{digest}" in (pulled / "README.md").read_text()
    assert json.loads((pulled / "oppu.json").read_text())["user_id"] == digest
    assert [r.repo_id for r in store.list(user_id=raw)] == [result.repo_id]
    assert hash_user_id(raw, "other salt") != digest
    with pytest.raises(ValueError, match="salt"):
        hub_store(hub_env, hash_user_ids=True).repo_id(raw, "LaMP-2N")


def test_hub_wrong_base_fails_clearly(hub_env: HubEnv, tiny_base, adapter_template, tmp_path):
    from transformers import LlamaForCausalLM

    store = hub_store(hub_env)
    repo_id = store.push(make_adapter(adapter_template, tmp_path / "a")).repo_id
    base = load_tiny(tiny_base)
    torch.manual_seed(123)
    other = LlamaForCausalLM(base.config).eval()
    with pytest.raises(AdapterBaseMismatchError, match="trained on base"):
        load_user_adapter(other, store, repo_id)


def test_hub_errors_are_clear(hub_env: HubEnv, adapter_template, tmp_path, monkeypatch):
    folder = make_adapter(adapter_template, tmp_path / "a")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(StoreAuthError, match="hf auth login"):
        hub_store(hub_env, token=None).push(folder)
    with pytest.raises(StoreAuthError, match="401"):
        hub_store(hub_env, token="hf_wrong").push(folder)
    with pytest.raises(StoreNamespaceError, match="belongs to someone else"):
        hub_store(hub_env, "bob").push(folder)
    with pytest.raises(StoreAuthError, match="403"):
        hub_store(hub_env, token=ALICE_READ_ONLY).push(folder)
    assert hub_store(hub_env, "lamp-lab").push(folder).repo_id == "lamp-lab/oppu-lamp-2n-u1"  # alice's org
    with pytest.raises(AdapterRepoNotFoundError):
        hub_store(hub_env).pull("alice/oppu-lamp-2n-nobody")
    with pytest.raises(AdapterRepoNotFoundError, match="revision"):
        hub_store(hub_env).pull("lamp-lab/oppu-lamp-2n-u1", revision="0" * 40)


@pytest.mark.parametrize("disconnect", [True, False], ids=["connection-dropped", "http-500"])
def test_hub_failed_upload_leaves_folder_intact_and_retry_works(hub_env: HubEnv, adapter_template, tmp_path,
                                                                 disconnect):
    from huggingface_hub import HfApi

    folder = make_adapter(adapter_template, tmp_path / "a")
    before = tree_hashes(folder)
    store = hub_store(hub_env)
    hub_env.hub.fail_next("commit", status=500, disconnect=disconnect)
    with pytest.raises(StoreUploadError, match="run the push again"):
        store.push(folder)
    assert tree_hashes(folder) == before
    api = HfApi(endpoint=hub_env.url, token=ALICE)
    assert [s.rfilename for s in api.model_info("alice/oppu-lamp-2n-u1").siblings] == [".gitattributes"]

    result = store.push(folder)
    assert result.new_revision and tree_hashes(folder) == before
    assert "adapter_model.safetensors" in {s.rfilename for s in api.model_info(result.repo_id).siblings}


# ---------------------------------------------------------------------------------------------------------------
# Local store
# ---------------------------------------------------------------------------------------------------------------
def test_local_push_layout_history_and_reload(tiny_base, adapter_template, expected_logits, tmp_path):
    store = LocalStore(tmp_path / "store", "alice")
    folder = make_adapter(adapter_template, tmp_path / "a")
    before = tree_hashes(folder)
    first = store.push(folder)
    repo = tmp_path / "store" / "alice" / "oppu-lamp-2n-u1"
    assert first.repo_id == "alice/oppu-lamp-2n-u1" and Path(first.url) == repo
    assert stat.S_IMODE(repo.stat().st_mode) == 0o700
    assert {p.name for p in repo.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "oppu.json",
                                                "README.md", ".history"}
    assert "user-u1" in (repo / "README.md").read_text() and tree_hashes(folder) == before
    assert torch.equal(logits(load_user_adapter(load_tiny(tiny_base), store, first.repo_id)), expected_logits)

    second = store.push(make_adapter(adapter_template, tmp_path / "v2", scale=3.0))
    assert second.revision != first.revision and store.history(first.repo_id) == [second.revision, first.revision]
    for rev in (first.revision, first.revision[:8], "1"):
        old = load_user_adapter(load_tiny(tiny_base), store, first.repo_id, revision=rev)
        assert torch.equal(logits(old), expected_logits)
    assert not torch.allclose(logits(load_user_adapter(load_tiny(tiny_base), store, first.repo_id)), expected_logits)
    both = load_user_adapter(old, store, first.repo_id, adapter_name="latest")  # a 2nd adapter on a PeftModel
    assert both is old and set(both.peft_config) == {"default", "latest"}
    both.set_adapter("latest")
    assert not torch.allclose(logits(both), expected_logits)
    both.set_adapter("default")
    assert torch.equal(logits(both), expected_logits)
    assert not store.push(tmp_path / "v2").new_revision
    with pytest.raises(AdapterRepoNotFoundError):
        store.pull(first.repo_id, revision="7")
    pulled = store.pull(first.repo_id, first.revision, local_dir=tmp_path / "out")
    assert (pulled / "adapter_model.safetensors").read_bytes() == (folder / "adapter_model.safetensors").read_bytes()


def test_local_public_list_filters_and_hashing(adapter_template, tmp_path):
    store = LocalStore(tmp_path / "store", "lab", private=False)
    for user, task in [("u1", "LaMP-2N"), ("u2", "LaMP-2N"), ("u1", "LaMP-3")]:
        store.push(make_adapter(adapter_template, tmp_path / f"{user}-{task}", user, task))
    assert stat.S_IMODE((tmp_path / "store" / "lab" / "oppu-lamp-3-u1").stat().st_mode) == 0o755
    assert [r.repo_id for r in store.list(task="LaMP-2N")] == ["lab/oppu-lamp-2n-u1", "lab/oppu-lamp-2n-u2"]
    assert [r.repo_id for r in store.list(user_id="u1")] == ["lab/oppu-lamp-2n-u1", "lab/oppu-lamp-3-u1"]
    (ref,) = store.list("u2", "LaMP-2N")
    assert (ref.task, ref.user, ref.peft_type, ref.private) == ("LaMP-2N", "u2", "LORA", False)

    hashed = LocalStore(tmp_path / "store", "lab", hash_user_ids=True, salt="pepper")
    result = hashed.push(make_adapter(adapter_template, tmp_path / "raw", "Jane Doe"))
    assert "jane" not in result.repo_id.lower()
    assert [r.repo_id for r in hashed.list(user_id="Jane Doe")] == [result.repo_id]
    assert all(b"Jane Doe" not in p.read_bytes() for p in Path(result.url).rglob("*") if p.is_file())


def test_local_wrong_base_fails(tiny_base, adapter_template, tmp_path):
    from transformers import LlamaForCausalLM

    store = LocalStore(tmp_path / "store")
    repo_id = store.push(make_adapter(adapter_template, tmp_path / "a")).repo_id
    assert repo_id == "local/oppu-lamp-2n-u1"
    torch.manual_seed(7)
    other = LlamaForCausalLM(load_tiny(tiny_base).config).eval()
    with pytest.raises(AdapterBaseMismatchError):
        load_user_adapter(other, store, repo_id)
    with pytest.raises(AdapterBaseMismatchError):  # a plain folder is checked too
        load_user_adapter(other, None, store.pull(repo_id))


def test_local_push_failing_midway_changes_nothing(adapter_template, tmp_path, monkeypatch):
    import oppu_hub.local_store as store_module

    store = LocalStore(tmp_path / "store", "alice")
    first = store.push(make_adapter(adapter_template, tmp_path / "v1"))
    repo = Path(first.url)
    repo_before = tree_hashes(repo)
    folder = make_adapter(adapter_template, tmp_path / "v2", scale=2.0)
    folder_before = tree_hashes(folder)

    calls = {"n": 0}
    real = store_module._link_or_copy

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (injected)")
        real(src, dst)

    monkeypatch.setattr(store_module, "_link_or_copy", flaky)
    with pytest.raises(OSError, match="injected"):
        store.push(folder)
    assert tree_hashes(repo) == repo_before and tree_hashes(folder) == folder_before
    assert [p.name for p in repo.parent.iterdir() if p.name.startswith(f".{repo.name}.")] == [
        f".{repo.name}.lock"]  # no half-written temporary folder left
    assert store.push(folder).new_revision and len(store.history(first.repo_id)) == 2


def test_open_store_specs(tmp_path, monkeypatch):
    monkeypatch.delenv("OPPU_HUB_STORE", raising=False)
    monkeypatch.setenv("OPPU_HUB_CACHE", str(tmp_path / "cache"))
    hub = open_store("hub:alice", endpoint="http://127.0.0.1:9")
    assert isinstance(hub, HubStore) and hub.namespace == "alice" and hub.endpoint == "http://127.0.0.1:9"
    assert open_store("hf://lamp-lab", endpoint="http://x").namespace == "lamp-lab"
    assert isinstance(open_store(str(tmp_path)), LocalStore) and open_store(str(tmp_path)).root == tmp_path
    assert open_store(f"local:{tmp_path}", namespace="ns").namespace == "ns"
    default = open_store()
    assert isinstance(default, LocalStore) and default.root == tmp_path / "cache" / "store"
    monkeypatch.setenv("OPPU_HUB_STORE", str(tmp_path / "env-store"))
    assert open_store().root == tmp_path / "env-store"
    with pytest.raises(ValueError):
        LocalStore(tmp_path).pull("../../etc")


def test_push_adapter_refuses_folders_that_do_not_verify(tmp_path, adapter_template):
    from oppu_hub.adapters import AdapterCorruptError

    folder = make_adapter(adapter_template, tmp_path / "a")
    (folder / "oppu.json").unlink()
    with pytest.raises(AdapterCorruptError, match="missing oppu.json"):
        push_adapter(folder, str(tmp_path / "store"))
    folder = make_adapter(adapter_template, tmp_path / "b")
    weights = load_file(folder / "adapter_model.safetensors")
    save_file({k: v * 2 for k, v in weights.items()}, folder / "adapter_model.safetensors")  # not the saved weights
    with pytest.raises(AdapterCorruptError, match="sha256"):
        push_adapter(folder, str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["hub", "local"])
def test_cli_push_list_pull(kind, hub_env: HubEnv, tiny_base, adapter_template, expected_logits, tmp_path,
                            capsys):
    store = "hub:alice" if kind == "hub" else str(tmp_path / "store")
    folder = make_adapter(adapter_template, tmp_path / "a")
    assert cli("push", "--folder", str(folder), "--store", store, "--raw_user_ids") == 0
    out = capsys.readouterr().out
    assert out.startswith("alice/oppu-lamp-2n-u1@" if kind == "hub" else "local/oppu-lamp-2n-u1@")
    repo_id = out.split("@")[0]
    assert cli("push", "--folder", str(make_adapter(adapter_template, tmp_path / "b", "u2")), "--store", store,
               "--no_private", "--raw_user_ids") == 0
    capsys.readouterr()

    assert cli("list", "--store", store, "--task", "LaMP-2N") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["repo", "task", "user"] and len(lines) == 3
    assert cli("list", "--store", store, "--user", "u2", "--json", "--raw_user_ids") == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["user"] == "u2" and row["private"] is False

    assert cli("pull", "--store", store, "--repo_id", repo_id, "--local_dir", str(tmp_path / "pulled")) == 0
    pulled = Path(capsys.readouterr().out.strip())
    assert pulled == tmp_path / "pulled"
    model = load_user_adapter(load_tiny(tiny_base), None, pulled)
    assert torch.equal(logits(model), expected_logits)

    assert cli("pull", "--store", store, "--repo_id", f"{repo_id.split('/')[0]}/oppu-lamp-2n-zz") == 2
    assert "error" in capsys.readouterr().err
    if kind == "hub":
        assert cli("push", "--folder", str(folder), "--store", "hub:bob", "--raw_user_ids") == 2
        assert "belongs to someone else" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Visibility: a push never publishes into an existing public repo unless asked to
# ---------------------------------------------------------------------------------------------------------------
def test_hub_refuses_an_existing_public_repo(hub_env: HubEnv, adapter_template, tmp_path, capsys):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_env.url, token=ALICE)
    repo_id = "alice/oppu-lamp-2n-u1"
    api.create_repo(repo_id, private=False)
    folder = make_adapter(adapter_template, tmp_path / "a")
    hub = hub_env.hub
    with pytest.raises(StorePublicRepoError, match=f"{repo_id} is public.*--make_private.*--no_private"):
        hub_store(hub_env).push(folder)
    assert hub.calls("/preupload/") == hub.calls("/commit/") == 0  # nothing uploaded
    assert api.model_info(repo_id).private is False and len(api.list_repo_commits(repo_id)) == 1

    assert cli("push", "--folder", str(folder), "--store", "hub:alice", "--raw_user_ids") == 2  # the CLI too
    err = capsys.readouterr().err
    assert f"{repo_id} is public" in err and len(err.strip().splitlines()) == 1

    result = hub_store(hub_env).push(folder, make_private=True)  # explicit: make it private, then push
    assert hub.settings_changes == [(repo_id, True)]
    assert api.model_info(repo_id).private is True and result.new_revision
    assert len(api.list_repo_commits(repo_id)) == 2
    assert hub_store(hub_env).push(folder).new_revision is False  # private now: pushes go through


def test_hub_publishing_and_settings_need_an_explicit_flag_and_rights(hub_env: HubEnv, adapter_template, tmp_path,
                                                                      capsys):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=hub_env.url, token=ALICE)
    api.create_repo("alice/oppu-lamp-2n-u1", private=False)
    assert cli("push", "--folder", str(make_adapter(adapter_template, tmp_path / "a")), "--store", "hub:alice",
               "--raw_user_ids", "--no_private") == 0  # --no_private: publishing was asked for
    capsys.readouterr()
    info = api.model_info("alice/oppu-lamp-2n-u1")
    assert info.private is False and "adapter_model.safetensors" in {s.rfilename for s in info.siblings}
    assert hub_env.hub.settings_changes == []
    # The settings endpoint as the Hub has it: what the client sends ({"visibility": ...}), the older
    # {"private": ...}, and only for writers.
    api.update_repo_settings("alice/oppu-lamp-2n-u1", private=True)
    assert api.model_info("alice/oppu-lamp-2n-u1").private is True
    for token in (BOB, ALICE_READ_ONLY):
        with pytest.raises(HfHubHTTPError) as e:
            HfApi(endpoint=hub_env.url, token=token).update_repo_settings("alice/oppu-lamp-2n-u1", private=False)
        assert e.value.response.status_code in (403, 404)
    import httpx2

    r = httpx2.put(f"{hub_env.url}/api/models/alice/oppu-lamp-2n-u1/settings", json={"private": False},
                   headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 200 and api.model_info("alice/oppu-lamp-2n-u1").private is False
    assert hub_env.hub.settings_changes == [("alice/oppu-lamp-2n-u1", True), ("alice/oppu-lamp-2n-u1", False)]


def test_local_store_refuses_a_public_repo_too(adapter_template, tmp_path):
    public = LocalStore(tmp_path / "store", "lab", private=False)
    repo = Path(public.push(make_adapter(adapter_template, tmp_path / "a")).url)
    assert stat.S_IMODE(repo.stat().st_mode) == 0o755
    store = LocalStore(tmp_path / "store", "lab")
    folder = make_adapter(adapter_template, tmp_path / "b", scale=2.0)
    with pytest.raises(StorePublicRepoError, match="lab/oppu-lamp-2n-u1 is public"):
        store.push(folder)
    assert len(store.history("lab/oppu-lamp-2n-u1")) == 1
    assert store.push(folder, make_private=True).new_revision
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in [repo, *repo.rglob("*")])


# ---------------------------------------------------------------------------------------------------------------
# Hashed user ids: the Hub's default
# ---------------------------------------------------------------------------------------------------------------
def test_hub_hashes_user_ids_by_default(hub_env: HubEnv, adapter_template, tmp_path, monkeypatch, capsys):
    raw = "Jane.Doe"
    folder = make_adapter(adapter_template, tmp_path / "a", raw)
    record = AdapterRecord.from_folder(folder)
    record.last_item_id, record.trained_item_ids = "jane-item-7", ["jane-item-6", "jane-item-7"]
    record.save(folder)
    store = HubStore("alice", endpoint=hub_env.url, token=ALICE)
    assert store.hash_user_ids
    with pytest.raises(ValueError, match="OPPU_HUB_USER_SALT.*--raw_user_ids"):
        store.push(folder)
    assert hub_env.hub.requests == []  # refused before any request
    assert cli("push", "--folder", str(folder), "--store", "hub:alice") == 2
    assert "OPPU_HUB_USER_SALT" in capsys.readouterr().err

    monkeypatch.setenv("OPPU_HUB_USER_SALT", "pepper")
    result = HubStore("alice", endpoint=hub_env.url, token=ALICE).push(folder)
    assert result.repo_id == f"alice/oppu-lamp-2n-{hash_user_id(raw, 'pepper')}"
    pulled = hub_store(hub_env).pull(result.repo_id)
    for path in pulled.iterdir():
        assert b"Jane" not in path.read_bytes() and b"jane-item" not in path.read_bytes(), path.name
    assert cli("list", "--store", "hub:alice", "--user", raw, "--json") == 0
    assert json.loads(capsys.readouterr().out)["repo_id"] == result.repo_id

    monkeypatch.setenv("OPPU_HUB_HASH_USER_IDS", "0")  # raw ids only on request
    assert HubStore("alice", endpoint=hub_env.url).repo_id(raw, "LaMP-2N") == "alice/oppu-lamp-2n-jane.doe-" + \
        hub_store(hub_env).repo_id(raw, "LaMP-2N").rsplit("-", 1)[1]
    monkeypatch.setenv("OPPU_HUB_HASH_USER_IDS", "maybe")
    with pytest.raises(ValueError, match="OPPU_HUB_HASH_USER_IDS='maybe'"):
        HubStore("alice", endpoint=hub_env.url)
    monkeypatch.delenv("OPPU_HUB_HASH_USER_IDS")
    assert not LocalStore(tmp_path / "store").hash_user_ids  # a local store keeps raw ids unless asked
    assert cli("list", "--store", "hub:alice", "--hash_user_ids", "--raw_user_ids") == 2
    assert "contradict" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Owner-only permissions
# ---------------------------------------------------------------------------------------------------------------
def modes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


def assert_owner_only(folder: Path) -> None:
    bad = {name: oct(mode) for name, mode in modes(folder).items() if mode & 0o077}
    assert not bad, f"readable by others under {folder}: {bad}"


def test_local_store_and_pulled_copies_are_owner_only(adapter_template, tmp_path):
    store = LocalStore(tmp_path / "store", "alice")
    result = store.push(make_adapter(adapter_template, tmp_path / "a"))
    store.push(make_adapter(adapter_template, tmp_path / "b", scale=2.0))
    root = tmp_path / "store"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and stat.S_IMODE((root / "alice").stat().st_mode) == 0o700
    assert_owner_only(root)
    assert stat.S_IMODE((Path(result.url) / ".history" / "1" / "oppu.json").stat().st_mode) == 0o400

    new = store.pull(result.repo_id, local_dir=tmp_path / "copy")
    assert_owner_only(new)
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    (existing / "notes.txt").write_text("mine")
    (existing / "notes.txt").chmod(0o644)
    store.pull(result.repo_id, local_dir=existing)
    got = modes(existing)
    assert got["."] == 0o755 and got["notes.txt"] == 0o644  # the caller's folder and files are left alone
    assert {got[name] for name in ("adapter_config.json", "adapter_model.safetensors", "oppu.json")} == {0o600}


def test_hub_pulled_copies_are_owner_only(hub_env: HubEnv, adapter_template, tmp_path):
    store = hub_store(hub_env)
    repo_id = store.push(make_adapter(adapter_template, tmp_path / "a")).repo_id
    new = store.pull(repo_id, local_dir=tmp_path / "copy")
    assert (new / "adapter_model.safetensors").is_file()
    assert_owner_only(new)
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    store.pull(repo_id, local_dir=existing)
    got = modes(existing)
    assert got["."] == 0o755 and got["adapter_model.safetensors"] == 0o600 and got[".cache"] == 0o700
    hub_env.hub.fail_next("resolve", status=404)
    with pytest.raises(StoreError, match="pull alice/oppu-lamp-2n-u1 failed at step 'download'"):
        store.pull(repo_id, local_dir=tmp_path / "failed")  # leaves no folder behind
    assert not (tmp_path / "failed").exists() and not list(tmp_path.glob(".failed*"))


# ---------------------------------------------------------------------------------------------------------------
# Pulls serve files only to a token the Hub authorised in that very call, checked against the repo's name
# ---------------------------------------------------------------------------------------------------------------
def test_hub_pull_serves_files_only_to_a_token_authorised_now(hub_env: HubEnv, adapter_template, tmp_path,
                                                              monkeypatch, capsys):
    from huggingface_hub import constants

    store = hub_store(hub_env)
    result = store.push(make_adapter(adapter_template, tmp_path / "a", "cacheduser"))
    repo_id = result.repo_id
    pulled = store.pull(repo_id)  # alice's download, kept in the Hugging Face cache
    assert json.loads((pulled / "oppu.json").read_text())["user_id"] == "cacheduser"
    cache = Path(constants.HF_HUB_CACHE) / "models--alice--oppu-lamp-2n-cacheduser"
    assert pulled.is_relative_to(cache)
    assert_owner_only(cache)  # folders 0700, files 0600: oppu.json names the user and their items

    monkeypatch.delenv("HF_TOKEN")
    for token, error in [(BOB, AdapterRepoNotFoundError), (None, AdapterRepoNotFoundError),
                         ("hf_wrong", StoreAuthError)]:
        for revision in (None, result.revision):
            with pytest.raises(error):
                hub_store(hub_env, token=token).pull(repo_id, revision)
    monkeypatch.setenv("HF_TOKEN", BOB)
    capsys.readouterr()
    assert cli("pull", "--store", "hub:alice", "--repo_id", repo_id) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and repo_id in captured.err

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # offline: nobody can say the token may read it
    with pytest.raises(StoreConnectionError, match=f"pull {repo_id} failed"):
        store.pull(repo_id)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert store.pull(repo_id) == pulled
    with socket.socket() as s:  # a port nothing listens on: the Hub does not answer, the same
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    for token in (ALICE, BOB, None):
        with pytest.raises(StoreConnectionError, match="no answer"):
            HubStore("alice", endpoint=dead, token=token, hash_user_ids=False).pull(repo_id)


def test_hub_pull_checks_what_it_serves(hub_env: HubEnv, adapter_template, tmp_path):
    from huggingface_hub import HfApi

    from oppu_hub.adapters import AdapterCorruptError, AdapterMismatchError

    store = hub_store(hub_env)
    repo_id = store.push(make_adapter(adapter_template, tmp_path / "a", "u1")).repo_id
    api = HfApi(endpoint=hub_env.url, token=ALICE)
    other = json.loads((tmp_path / "a" / "oppu.json").read_text()) | {"user_id": "u2"}
    api.upload_file(path_or_fileobj=json.dumps(other).encode(), path_in_repo="oppu.json", repo_id=repo_id)
    with pytest.raises(AdapterMismatchError, match="user 'u2'.*oppu-lamp-2n-u2"):
        store.pull(repo_id)
    with pytest.raises(AdapterMismatchError):
        store.pull(repo_id, local_dir=tmp_path / "copy")
    assert not (tmp_path / "copy").exists()  # a new local_dir appears only with an adapter that checks out
    store.push(tmp_path / "a")
    api.upload_file(path_or_fileobj=b"not safetensors", path_in_repo="adapter_model.safetensors", repo_id=repo_id)
    with pytest.raises(AdapterCorruptError, match="safetensors"):
        store.pull(repo_id)
    local = LocalStore(tmp_path / "store", "alice")
    repo = Path(local.push(make_adapter(adapter_template, tmp_path / "b", "u1")).url)
    (repo / ".history" / "1" / "oppu.json").chmod(0o600)
    (repo / ".history" / "1" / "oppu.json").write_text(json.dumps(other))
    with pytest.raises(AdapterMismatchError):
        local.pull("alice/oppu-lamp-2n-u1")
