"""Two-stage personalization, "collective then personal" (trainers/collective.py, eval's two-stage-kN and
two-stage-pooled-kN): stage A's data, the merged base and its record, stage B on it, and the eval columns."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import logits, make_lamp2n
from oppu_hub.adapters import AdapterRecord
from oppu_hub.cards import pretrained_base
from oppu_hub.cli import main
from oppu_hub.data import LampSplit, load_task_split, write_split
from oppu_hub.methods import Method, parse_method
from oppu_hub.models import model_fingerprint
from oppu_hub.predict_config import PredictConfig
from oppu_hub.prompts import PromptBuilder
from oppu_hub.tasks import get_task
from trainers.base import check_base_record, read_base_record
from trainers.collective import collective_examples, collective_histories
from trainers.collective_config import CollectiveConfig

TRAIN_USERS, TEST_USERS = ["u0", "u1", "u2"], ["u3", "u4", "u5"]
TEST_WORDS = ["glacier", "saffron", "tundra"]  # make_lamp2n's topic words of u3, u4, u5
TINY = ["--base.max_examples", "4", "--user.max_history", "3", "--user.num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--precision", "fp32", "--users", "2", "--max_prompt_length", "128"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3 training and 3 test users; training user u0's history also holds test user u3's query (as a co-authored
    LaMP-5 paper can be a training user's item and an evaluated query)."""
    folder = make_lamp2n(tmp_path_factory.mktemp("data"), {"train": 3, "test": 3}, history=5)
    task = get_task("LaMP-2N")
    train, test = (load_task_split(folder, task, s) for s in ("train", "test"))
    query = test.user_questions("u3")[0]
    leak = {"id": "u0-leak", "text": query.fields(task)["text"], "title": "leak", "category": query.gold,
            "date": "2020-01-03"}
    questions = [dataclasses.replace(q, profile=[*q.profile, leak]) if q.user_id == "u0" else q
                 for q in train.questions]
    write_split(LampSplit(task, questions), folder / task.name, "train")
    return folder


def test_two_stage_methods():
    private, pooled = parse_method("two-stage-k1"), parse_method("Two-Stage-Pooled-k0")
    assert (private.family, private.k, private.collective, private.group, private.label) == (
        "two-stage", 1, "train", "Two-stage", "k=1")
    assert (pooled.family, pooled.collective, pooled.label, pooled.name) == (
        "two-stage-pooled", "pooled", "pooled k=0", "two-stage-pooled-k0")
    assert private.oppu and pooled.oppu and not pooled.pooled and parse_method("oppu-k0").collective is None
    names = ["two-stage-pooled-k0", "two-stage-k1", "two-stage-k0", "pag-oppu-k0", "oppu-k0", "pooled-k0"]
    assert [m.name for m in sorted(map(parse_method, names), key=Method.sort_key)] == [
        "pooled-k0", "oppu-k0", "pag-oppu-k0", "two-stage-k0", "two-stage-k1", "two-stage-pooled-k0"]
    # predict --method: the user's adapters on the collective base
    assert PredictConfig(task="LaMP-2N", method="two-stage-k1", adapters_dir="users").k == 1
    with pytest.raises(ValueError, match="needs --adapters_dir"):
        PredictConfig(task="LaMP-2N", method="two-stage-k0")


def test_stage_a_of_the_private_variant_holds_no_evaluated_users_item(data):
    config = CollectiveConfig(task="LaMP-2N", data_dir=str(data), k=1)
    histories, left_out = collective_histories(config)
    assert list(histories) == TRAIN_USERS and left_out == 1  # u0's copy of u3's query
    ids = [item["id"] for items in histories.values() for item in items]
    assert "u0-leak" not in ids and {i.split("-")[0] for i in ids} == set(TRAIN_USERS) and len(ids) == 3 * 5
    examples = collective_examples(config, PromptBuilder(get_task("LaMP-2N"), None, 384), histories)
    assert sorted(i for i, _ in examples) == sorted(f"{i.split('-')[0]}/{i}" for i in ids)
    texts = [row["prompt"] + row["completion"] for _, row in examples]
    assert not any(word in text for text in texts for word in TEST_WORDS)
    assert any("harbor" in text for text in texts)  # u0's own items (and, k=1, retrieved ones) are there
    # Without an evaluated split nothing is left out: the query copy would be trained on.
    assert collective_histories(dataclasses.replace(config, split="none"))[1] == 0
    capped = collective_examples(dataclasses.replace(config, max_examples=4),
                                 PromptBuilder(get_task("LaMP-2N"), None, 384), histories)
    assert len(capped) == 4 and {i for i, _ in capped} <= {i for i, _ in examples}  # a seeded sample
    # The pooled variant trains on the evaluated users' histories: the pooled control's items, ids {user}/{id}.
    pooled = CollectiveConfig(task="LaMP-2N", data_dir=str(data), users="pooled", user_ids=["u3", "u4"],
                              max_history=3)
    histories, left_out = collective_histories(pooled)
    assert list(histories) == ["pooled"] and left_out == 0
    assert sorted(i["id"] for i in histories["pooled"]) == [f"{u}/{u}-{j}" for u in ("u3", "u4") for j in (2, 3, 4)]
    for bad, message in [({"users": "everyone"}, "users must be"), ({"users": "pooled", "split": "none"}, "--split"),
                         ({"peft_type": "IA3"}, "LoRA"), ({"profile": True}, "no profile")]:
        with pytest.raises(ValueError, match=message):
            CollectiveConfig(task="LaMP-2N", **bad)


def test_train_collective_flags_default_to_the_tasks_tuned_settings(capsys):
    from oppu_hub.cli import build_parser, config_from_args
    from oppu_hub.tuned import user_defaults

    config = config_from_args(CollectiveConfig, build_parser().parse_args(
        ["train-collective", "--task", "LaMP-5", "--users", "pooled", "--split", "dev"]))
    assert config == CollectiveConfig.for_task("LaMP-5", users="pooled", split="dev")
    assert (config.learning_rate, config.max_examples, config.per_device_train_batch_size) == (
        user_defaults("LaMP-5").learning_rate, 3000, 4)
    with pytest.raises(SystemExit) as exit_info:
        main(["train-collective", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0 and "--users {train,pooled}" in text and "no evaluated user's data" in text


@pytest.fixture(scope="module")
def stages(data, tiny_base, tmp_path_factory):
    """A task-adapted base (train-base) and the collective base made on it (train-collective), by the commands."""
    runs = tmp_path_factory.mktemp("runs")
    fast = ["--task", "LaMP-2N", "--data_dir", str(data), "--per_device_train_batch_size", "3", "--precision", "fp32"]
    assert main(["train-base", *fast, "--base_model", str(tiny_base), "--output_dir", str(runs / "base"),
                 "--num_train_epochs", "1", "--max_examples", "4"]) == 0
    adapted = runs / "base" / "LaMP-2N" / "k0"
    assert main(["train-collective", *fast, "--base_dir", str(adapted), "--output_dir", str(runs / "collective"),
                 "--learning_rate", "0.02", "--num_train_epochs", "2"]) == 0
    return adapted, runs / "collective" / "LaMP-2N" / "k0-collective-train"


def test_collective_base_carries_stage_a_and_names_both_stages(stages, tiny_base, capsys):
    adapted, merged = stages
    tokenizer = AutoTokenizer.from_pretrained(merged)
    before, after = (AutoModelForCausalLM.from_pretrained(f) for f in (adapted, merged))
    assert not torch.allclose(logits(before, tokenizer), logits(after, tokenizer))  # stage A's weights are in it
    assert not any("lora" in name for name, _ in after.named_parameters())  # merged: a plain model folder
    record, first = read_base_record(merged), read_base_record(adapted)
    assert (record["task"], record["k"], record["profile"], record["stage"]) == ("LaMP-2N", 0, False, "collective")
    assert record["fingerprint"] == model_fingerprint(after) != first["fingerprint"]
    assert record["task_adapted"] == {"dir": str(adapted), "fingerprint": first["fingerprint"], "record": first}
    collective = record["collective"]
    assert (collective["users"], collective["split"], collective["num_users"], collective["num_items"],
            collective["left_out_queries"], collective["num_examples"]) == ("train", "test", 3, 15, 1, 15)
    assert set(collective["data"]) == {"train", "test"} and collective["train_loss"] > 0 <= collective["train_seconds"]
    assert collective["config"]["learning_rate"] == 0.02 and collective["config"]["base_dir"] == str(adapted)
    assert pretrained_base(str(merged)) == str(tiny_base)  # model cards follow both stages down
    check_base_record(merged, "LaMP-2N", k=0, profile=False)  # accepted as the task-adapted base is
    with pytest.raises(ValueError, match="k 0"):
        check_base_record(merged, "LaMP-2N", k=1, profile=False)
    # A second call reuses it; a base task-adapted for another k is refused.
    mtime = (merged / "model.safetensors").stat().st_mtime_ns
    argv = ["train-collective", "--task", "LaMP-2N", "--base_dir", str(adapted), "--output_dir",
            str(merged.parent.parent), "--learning_rate", "0.02", "--num_train_epochs", "2"]
    assert main(argv) == 0 and (merged / "model.safetensors").stat().st_mtime_ns == mtime
    assert main([*argv, "--k", "1", "--output_dir", str(merged.parent / "other")]) == 2
    assert "task-adapted with k 0 (requested 1)" in capsys.readouterr().err


def test_stage_b_trains_users_on_the_collective_base(stages, data, tmp_path):
    _, merged = stages
    assert main(["train-users", "--task", "LaMP-2N", "--data_dir", str(data), "--base_dir", str(merged),
                 "--output_dir", str(tmp_path), "--max_users", "1", "--num_train_epochs", "1",
                 "--per_device_train_batch_size", "3", "--precision", "fp32", "--concurrent", "1"]) == 0
    record = AdapterRecord.from_folder(tmp_path / "LaMP-2N" / "k0-lora" / "u3")
    assert record.base_model == str(merged) and record.base_fingerprint == read_base_record(merged)["fingerprint"]


def test_eval_two_stage_columns(data, tiny_base, tmp_path, monkeypatch):
    from trainers.base import BaseTaskTrainer

    work = tmp_path / "work"
    args = ["eval", "--data_dir", str(data), "--workdir", str(work), "--base.base_model", str(tiny_base),
            "--tasks", "LaMP-2N", "--methods", "oppu-k0", "two-stage-k0", "two-stage-pooled-k0", *TINY]
    trained = []
    orig_base, orig_save = BaseTaskTrainer.train, AdapterRecord.save
    monkeypatch.setattr(BaseTaskTrainer, "train", lambda self, **kw: trained.append("base") or orig_base(self, **kw))
    monkeypatch.setattr(AdapterRecord, "save", lambda self, folder: trained.append("user") or orig_save(self, folder))
    assert main(args) == 0
    # The task-adapted k0 base and the two collective bases; 2 users' adapters on each of the three bases.
    assert sorted(trained) == ["base"] * 3 + ["user"] * 6
    result = json.loads((work / "results" / "leaderboard.json").read_text())
    assert [(c["method"], c["group"]) for c in result["columns"]] == [
        ("oppu-k0", "RAG+OPPU"), ("two-stage-k0", "Two-stage"), ("two-stage-pooled-k0", "Two-stage")]
    rows = {r["method"]: r for r in result["meta"]["results"]}
    assert all(rows[m]["scores"]["accuracy"] >= 0 for m in rows)
    adapted = rows["oppu-k0"]["base"]
    for method, users, items in [("two-stage-k0", "train", 4), ("two-stage-pooled-k0", "pooled", 2 * 3)]:
        base = Path(rows[method]["base"])
        assert base.parent.parent.parent == work / "base" and base.name == f"k0-collective-{users}"
        record = read_base_record(base)
        assert record["task_adapted"]["dir"] == adapted and record["collective"]["users"] == users
        assert record["collective"]["num_examples"] == items  # --base.max_examples 4; pooled: 2 users x 3 items
        assert AdapterRecord.from_folder(Path(rows[method]["adapters"]) / "u3").base_model == str(base)
    assert len({rows[m]["adapters"] for m in rows}) == 3
    pooled = read_base_record(rows["two-stage-pooled-k0"]["base"])["collective"]
    assert pooled["config"]["user_ids"] == ["u3", "u4"] and pooled["config"]["max_examples"] is None
    # A second run finds every artifact by its hash: nothing is trained or predicted again.
    trained.clear()
    assert main(args) == 0 and trained == []
    # What each column's training cost, from the artifacts the table names.
    assert main(["analyze", "method-costs", "--leaderboard", str(work / "results"), "--tasks", "LaMP-2N",
                 "--out_dir", str(tmp_path / "analyses")]) == 0
    costs = json.loads((tmp_path / "analyses" / "method-costs.json").read_text())
    by_method = {r[1]: dict(zip(costs["header"], r, strict=True)) for r in costs["rows"]}
    assert list(by_method) == ["oppu-k0", "two-stage-k0", "two-stage-pooled-k0"]
    adapter_kb = round((Path(rows["oppu-k0"]["adapters"]) / "u3" / "adapter_model.safetensors").stat().st_size / 1e3, 1)
    for method, examples in [("oppu-k0", None), ("two-stage-k0", 4), ("two-stage-pooled-k0", 6)]:
        cost = by_method[method]
        assert (cost["users"], cost["items per user"], cost["adapter KB per user"]) == (2, 3, adapter_kb)
        # Seconds are recorded (a tiny model's may round to 0.0).
        assert cost["s per user (slot)"] >= 0 <= cost["users' runs s"] and cost["shared examples"] == examples
        assert (cost["shared s"] is None) == (examples is None) and (cost["shared MB"] is None) == (examples is None)
    assert by_method["two-stage-k0"]["shared s"] >= 0 and by_method["two-stage-k0"]["shared MB"] > 0.1  # a model
