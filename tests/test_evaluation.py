"""The leaderboard (oppu-hub eval): Table 2 layout with baselines, n and bootstrap intervals, scores == re-scored
prediction files, reuse of trained models."""

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import make_lamp2n, make_random_adapter
from oppu_hub.adapters import AdapterRecord
from oppu_hub.cli import main
from oppu_hub.data import read_predictions, write_predictions
from oppu_hub.evaluation import machine, rescore
from oppu_hub.io import write_json
from oppu_hub.leaderboard import build_table, format_csv, format_markdown, write_table
from oppu_hub.methods import Method, parse_method
from oppu_hub.metrics import score
from oppu_hub.pipeline import Pipeline
from oppu_hub.tasks import get_task

TINY = ["--base.max_examples", "4", "--user.max_history", "3", "--user.num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--precision", "fp32", "--profile_tokens", "6", "--users", "2",
        "--max_prompt_length", "128"]


def test_method_names():
    assert parse_method("rag-k2") == Method("rag", 2)
    assert parse_method("PAG-OPPU-k1").profile and parse_method("pag-oppu-k1").oppu
    assert parse_method("random-k1").random_history and not parse_method("rag-k1").random_history
    assert parse_method("Majority") == Method("majority", 0) and parse_method("bm25-copy").baseline
    assert parse_method("user-majority").name == "user-majority" and parse_method("user-majority").label == \
        "user-majority"
    pooled = parse_method("pooled-k1")
    assert pooled.pooled and not pooled.oppu and not pooled.baseline and pooled.name == "pooled-k1"
    for bad in ("np-k1", "random-k0", "bm25-k1", "rag", "majority-k0", "pooled"):
        with pytest.raises(ValueError):
            parse_method(bad)


def test_column_order():
    # The paper's order (Non-Personalized (k=0, random), RAG, PAG, RAG+OPPU, PAG+OPPU), baselines first and the
    # pooled control beside RAG+OPPU.
    names = ["pag-oppu-k0", "oppu-k1", "pooled-k1", "pag-k0", "rag-k2", "rag-k1", "random-k1", "np-k0",
             "bm25-copy", "user-majority", "majority", "pooled-k0"]
    methods = sorted(map(parse_method, names), key=Method.sort_key)
    assert [m.name for m in methods] == ["majority", "user-majority", "bm25-copy", "np-k0", "random-k1", "rag-k1",
                                         "rag-k2", "pag-k0", "pooled-k0", "pooled-k1", "oppu-k1", "pag-oppu-k0"]
    assert [m.group for m in methods] == ["Baselines"] * 3 + ["Non-Personalized"] * 2 + ["RAG"] * 2 + [
        "PAG"] + ["Pooled"] * 2 + ["RAG+OPPU", "PAG+OPPU"]


def _result_rows(folder: Path, task: str, golds: dict[str, str], predictions: dict[str, dict[str, str]]
                 ) -> list[dict]:
    """Rows as ``Pipeline.run`` returns them, their files written under ``folder``; query ids are ``{user}-...``."""
    out = folder / task
    write_predictions(get_task(task), golds, out / "golds.json")
    write_json(out / "users.json", {i: i.split("-")[0] for i in golds})
    return [{"task": task, "method": method, "scores": score(task, preds, golds),
             "predictions": str(write_predictions(get_task(task), preds, out / f"{method}.json")),
             "golds": str(out / "golds.json"), "query_users": str(out / "users.json")}
            for method, preds in predictions.items()]


def test_table_n_intervals_and_bold_only_for_significant_gains(tmp_path):
    users = ["u0", "u1", "u2", "u3"]
    ids = [f"{u}-q{j}" for u in users for j in range(2)]
    labels = dict(zip(users, ["sports", "politics", "travel", "crime"], strict=True))
    news = {i: labels[i.split("-")[0]] for i in ids}
    wrong_for_u3 = {i: "women" if i.startswith("u3") else g for i, g in news.items()}
    rows = _result_rows(tmp_path, "LaMP-2N", news, {
        "np-k0": dict.fromkeys(ids, "politics"),  # right for u1 only
        "rag-k1": {i: "women" if i[:2] in ("u1", "u3") else g for i, g in news.items()},  # as right, other users
        "oppu-k1": news,  # right for every user: beats np-k0 on 3 of 4 users, rag-k1 on 2
        "majority": dict.fromkeys(ids, "sports"),
        "pooled-k1": wrong_for_u3,  # beats rag-k1 on one user only
    })
    rows += _result_rows(tmp_path, "LaMP-3", dict.fromkeys(ids, "3"), {
        "np-k0": dict.fromkeys(ids, "5"), "rag-k1": dict.fromkeys(ids, "4"),  # rag: lower MAE for every user
        "oppu-k1": dict.fromkeys(ids, "1"), "pooled-k1": dict.fromkeys(ids, "4")})
    table = build_table(rows, resamples=500, seed=1)
    assert [c["method"] for c in table["columns"]] == ["majority", "np-k0", "rag-k1", "pooled-k1", "oppu-k1"]
    assert table["references"] == ["np-k0", "rag-k1"] and table["bootstrap"]["resamples"] == 500
    # Task order follows the registry; two metric rows per task, each with its n.
    assert [(r["task"], r["metric"], r["n"]) for r in table["rows"]] == [
        (t, m, {"queries": 8, "users": 4}) for t, m in [("LaMP-2N", "accuracy"), ("LaMP-2N", "f1"),
                                                        ("LaMP-3", "mae"), ("LaMP-3", "rmse")]]
    acc, mae = table["rows"][0], table["rows"][2]
    assert acc["best"] == ["oppu-k1"] and mae["best"] == ["rag-k1", "pooled-k1"]  # a tie: both marked
    significant = {(r["task"], r["metric"], ref, m) for r in table["rows"] for ref, per in r["deltas"].items()
                   for m, d in per.items() if d["significant"]}
    # pooled-k1's macro-F1 beats np-k0's on every resample (its wrong answers name a label no gold has), its
    # accuracy only on 3 of 4 users.
    assert significant == {("LaMP-2N", "accuracy", "np-k0", "oppu-k1"), ("LaMP-2N", "f1", "np-k0", "oppu-k1"),
                           ("LaMP-2N", "f1", "np-k0", "pooled-k1"),
                           ("LaMP-3", "mae", "np-k0", "rag-k1"), ("LaMP-3", "rmse", "np-k0", "rag-k1"),
                           ("LaMP-3", "mae", "np-k0", "pooled-k1"), ("LaMP-3", "rmse", "np-k0", "pooled-k1")}
    assert acc["deltas"]["rag-k1"]["pooled-k1"]["low"] <= 0  # one user differs: the interval holds 0
    assert mae["deltas"]["rag-k1"]["oppu-k1"] == {"diff": 1.0, "low": 1.0, "high": 1.0, "significant": False}

    md = format_markdown(table).splitlines()
    assert md[0] == ("| task | metric | n (queries / users) | Baselines majority | Non-Personalized k=0 | RAG k=1 | "
                     "Pooled k=1 | RAG+OPPU k=1 |")
    assert md[2] == "| LaMP-2N | accuracy ↑ | 8 / 4 | 0.250 | 0.250 | 0.500 | 0.750 | _1.000_ |"
    cells = [c.strip() for c in md[3].strip("|").split("|")]
    assert cells[:3] == ["", "Δ vs np-k0", ""] and cells[4] == ""  # no n, nothing against itself
    assert cells[3].startswith("+0.000 [-")  # majority: right for u0 where np-k0 is right for u1
    assert cells[6].startswith("+0.500 [") and cells[7].startswith("**+0.750 [") and cells[7].endswith("]**")
    assert not any(c.startswith("**") for c in [c.strip() for c in md[4].strip("|").split("|")])  # Δ vs rag-k1
    lamp3 = md.index("| LaMP-3 | mae ↓ | 8 / 4 | – | 2.000 | _1.000_ | _1.000_ | 2.000 |")
    assert md[lamp3 + 1] == ("|  | Δ vs np-k0 |  | – |  | **-1.000 [-1.000, -1.000]** | **-1.000 [-1.000, -1.000]** "
                             "| +0.000 [+0.000, +0.000] |")
    assert md[lamp3 + 2] == "|  | Δ vs rag-k1 |  | – | +1.000 [+1.000, +1.000] |  | +0.000 [+0.000, +0.000] " \
                            "| +1.000 [+1.000, +1.000] |"  # a significant loss is not bold
    assert "500 resamples" in md[-1]

    parsed = list(csv.DictReader(io.StringIO(format_csv(table))))
    assert [r["quantity"] for r in parsed[:7]] == ["score", "diff vs np-k0", "low vs np-k0", "high vs np-k0",
                                                   "diff vs rag-k1", "low vs rag-k1", "high vs rag-k1"]
    assert parsed[0]["n_queries"] == "8" and parsed[0]["n_users"] == "4" and parsed[0]["best"] == "oppu-k1"
    assert float(parsed[1]["oppu-k1"]) == 0.75 and parsed[1]["np-k0"] == "" and parsed[14]["metric"] == "mae" \
        and parsed[14]["majority"] == ""
    paths = write_table(table, tmp_path, meta={"date": "today"})
    written = json.loads(paths["json"].read_text())
    assert written["rows"] == table["rows"] and written["meta"]["date"] == "today"
    assert paths["md"].read_text().strip() == "\n".join(md) and paths["csv"].read_text() == format_csv(table)
    assert build_table(rows, resamples=500, seed=1) == table  # seeded
    # Without rag-k1 the RAG reference is the RAG method with the smallest k.
    renamed = [{**r, "method": {"rag-k1": "rag-k4", "oppu-k1": "rag-k2"}.get(r["method"], r["method"])}
               for r in rows]
    assert build_table(renamed, resamples=50)["references"] == ["np-k0", "rag-k2"]
    # Chosen references (the two-stage table's): in the order given, each compared with every other column.
    chosen = build_table(rows, references=["pooled-k1", "oppu-k1", "pooled-k1"], resamples=500, seed=1)
    assert chosen["references"] == ["pooled-k1", "oppu-k1"]
    assert list(chosen["rows"][0]["deltas"]) == ["pooled-k1", "oppu-k1"]
    assert chosen["rows"][0]["deltas"]["pooled-k1"]["oppu-k1"]["diff"] == 0.25  # u3's two queries of 8
    against_oppu = chosen["rows"][0]["deltas"]["oppu-k1"]["np-k0"]
    assert against_oppu["diff"] == -0.75 and not against_oppu["significant"]  # a loss is never marked a gain


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lamp2n(tmp_path_factory.mktemp("data"), {"train": 3, "test": 3}, history=5)


def test_eval_writes_official_files_and_reuses_everything(data, tiny_base, tmp_path, capsys, monkeypatch):
    from trainers.base import BaseTaskTrainer

    work = tmp_path / "work"
    args = ["eval", "--data_dir", str(data), "--workdir", str(work), "--base.base_model", str(tiny_base),
            "--tasks", "LaMP-2N", "--methods", "np-k0", "random-k1", "rag-k1", "pag-k0", "oppu-k0", "pooled-k0",
            "majority", "user-majority", "bm25-copy", *TINY]
    trained = []
    orig_base, orig_save = BaseTaskTrainer.train, AdapterRecord.save
    monkeypatch.setattr(BaseTaskTrainer, "train", lambda self, **kw: trained.append("base") or orig_base(self, **kw))
    # Every trained adapter, on the concurrent (default) or the sequential path, ends by saving its record.
    monkeypatch.setattr(AdapterRecord, "save", lambda self, folder: trained.append("user") or orig_save(self, folder))
    assert main(args) == 0
    # Bases k0, k1, k0-profile; 2 users' adapters and the pooled one; the baselines train nothing.
    assert trained.count("base") == 3 and trained.count("user") == 3
    printed = capsys.readouterr().out
    result = json.loads((work / "results" / "leaderboard.json").read_text())
    assert (work / "results" / "leaderboard.md").read_text().strip() in printed
    assert [c["method"] for c in result["columns"]] == ["majority", "user-majority", "bm25-copy", "np-k0",
                                                        "random-k1", "rag-k1", "pag-k0", "pooled-k0", "oppu-k0"]
    assert {r["metric"]: r["n"] for r in result["rows"]} == {m: {"queries": 2, "users": 2} for m in ("accuracy", "f1")}
    assert result["references"] == ["np-k0", "rag-k1"]
    golds_path = work / "results" / "predictions" / "LaMP-2N" / "golds.json"
    golds = json.loads(golds_path.read_text())
    assert golds["task"] == "LaMP_2N" and [g["id"] for g in golds["golds"]] == ["q3", "q4"]  # the first 2 test users
    assert json.loads((golds_path.parent / "users.json").read_text()) == {"q3": "u3", "q4": "u4"}
    by_method = {r["method"]: r for r in result["meta"]["results"]}
    # The synthetic users always pick their own category; the train users' (one each) tie: the label order decides.
    assert by_method["user-majority"]["scores"]["accuracy"] == 1.0
    assert set(read_predictions(by_method["majority"]["predictions"]).values()) == {"travel"}
    pooled = AdapterRecord.from_folder(by_method["pooled-k0"]["adapters"])
    assert pooled.user_id == "pooled" and pooled.num_history_items == 2 * 3  # 2 users x --max_history 3
    for row in result["meta"]["results"]:
        preds = json.loads(Path(row["predictions"]).read_text())
        assert preds["task"] == "LaMP_2N" and sorted(g["id"] for g in preds["golds"]) == ["q3", "q4"]
        assert set(read_predictions(row["predictions"])) == {"q3", "q4"}
        # What the table says is what the written files score.
        rescored = rescore(row["predictions"], golds_path, "LaMP-2N")
        assert rescored == row["scores"]
        for r in result["rows"]:
            assert r["scores"][row["method"]] == rescored[r["metric"]]
    models = sorted(work.glob("base/*/LaMP-2N/*/model.safetensors")) + sorted(work.glob("users/*/LaMP-2N/*/*/"
                                                                                       "adapter_model.safetensors"))
    assert len(models) == 3 + 2 + 1
    mtimes = [p.stat().st_mtime_ns for p in models]
    # Second run: everything is found by its configuration hash; nothing is trained, nothing rewritten.
    trained.clear()
    import oppu_hub.profiles

    monkeypatch.setattr(oppu_hub.profiles, "load_base", lambda *a, **k: pytest.fail("profiles regenerated"),
                        raising=False)
    assert main(args) == 0
    assert trained == []
    assert [p.stat().st_mtime_ns for p in models] == mtimes
    assert json.loads((work / "results" / "leaderboard.json").read_text())["rows"] == result["rows"]
    seconds = result["meta"]["task_seconds"]["LaMP-2N"]
    assert seconds > 0 and result["meta"]["wall_seconds"] == seconds
    # A finished task's rows are reused when only the table settings change: nothing is predicted again, and the
    # table still reports the time they took. The rows and prediction files are all it needs (a fresh clone of the
    # committed leaderboard has no bases or adapters). A task that fails after it leaves the finished tasks' table.
    artifacts = [work / "base", work / "users"]
    for folder in artifacts:
        folder.rename(folder.with_name(folder.name + ".away"))
    with monkeypatch.context() as m:
        m.setattr(Pipeline, "run", lambda *a, **k: pytest.fail("a finished task was predicted again"))
        assert main([*args, "--resamples", "20"]) == 0
        assert json.loads((work / "results" / "leaderboard.json").read_text())["meta"]["task_seconds"] == {
            "LaMP-2N": seconds}
        # So are decoding weights that none of the methods reads (no prior or contrastive column here).
        assert main([*args, "--prior_weight", "2", "--contrast_alpha", "1", "--prior_smoothing", "9"]) == 0
        # A setting the rows depend on leaves them standing no longer; --reuse_only says which setting changed.
        capsys.readouterr()
        assert main([*args, "--answers", "labels", "--reuse_only"]) == 0
        assert "do not stand: config.answers: 'generate' -> 'labels'" in capsys.readouterr().out
        assert json.loads((work / "results" / "leaderboard.json").read_text())["not_run"] == ["LaMP-2N"]
        recorded = json.loads((work / "results" / "rows" / "LaMP-2N.json").read_text())["spec"]["config"]
        assert recorded["answers"] == "generate" and "prior_weight" not in recorded
        # The references are a table setting too; one that is not a column is refused.
        assert main([*args, "--references", "pooled-k0", "OPPU-k0"]) == 0
        chosen = json.loads((work / "results" / "leaderboard.json").read_text())
        assert chosen["references"] == ["pooled-k0", "oppu-k0"] and set(chosen["rows"][0]["deltas"]) == {
            "pooled-k0", "oppu-k0"}
        capsys.readouterr()
        assert main([*args, "--references", "oppu-k1"]) == 2
        assert "reference 'oppu-k1' is not one of the methods run" in capsys.readouterr().err
        # --reuse_only tabulates the finished tasks and lists the others (LaMP-3 has no rows) as not run.
        tasks = args.index("--tasks") + 1
        assert main([*args[:tasks], "LaMP-2N", "LaMP-3", *args[tasks + 1:], "--reuse_only"]) == 0
        table = json.loads((work / "results" / "leaderboard.json").read_text())
        assert table["not_run"] == ["LaMP-3"] and {r["task"] for r in table["rows"]} == {"LaMP-2N"}
        assert "Not run under these settings: LaMP-3." in (work / "results" / "leaderboard.md").read_text()
    for folder in artifacts:
        folder.with_name(folder.name + ".away").rename(folder)
    # A changed tuned default names other adapters: the task runs again and trains them, on the reused bases.
    import oppu_hub.tuned

    tuned = oppu_hub.tuned.user_defaults("LaMP-2N")
    with monkeypatch.context() as m:
        m.setattr(oppu_hub.tuned, "user_defaults",
                  lambda task: dataclasses.replace(tuned, learning_rate=tuned.learning_rate / 2))
        assert main([*args, "--resamples", "20"]) == 0
    assert sorted(trained) == ["user"] * 3  # 2 users and the pooled adapter
    trained.clear()
    tasks = args.index("--tasks") + 1  # LaMP-3 has no data here
    assert main([*args[:tasks], "LaMP-2N", "LaMP-3", *args[tasks + 1:], "--resamples", "30"]) == 2
    partial = json.loads((work / "results" / "leaderboard.json").read_text())
    assert partial["bootstrap"]["resamples"] == 30 and {r["task"] for r in partial["rows"]} == {"LaMP-2N"}
    # A changed adapter setting trains new adapters (in a new folder) on the reused base; one more user only
    # trains that user.
    assert main([*args[:-len(TINY)], *TINY, "--methods", "oppu-k0", "--user.num_train_epochs", "2"]) == 0
    assert trained == ["user", "user"]
    trained.clear()
    assert main([*args, "--methods", "oppu-k0", "--users", "3"]) == 0
    assert trained == ["user"]
    # Per-user folders for the default, the halved tuned lr and 2 epochs; pooled ones for the first two.
    assert len(list(work.glob("users/*/LaMP-2N/k0-lora"))) == 3 + 2


def test_pooled_adapter_applies_to_every_query_like_a_loaded_user_adapter(tiny_base, tmp_path):
    # Pipeline.run predicts pooled-kN on a Generator whose model already carries the pooled adapter.
    from oppu_hub.inference import Generator, load_user_adapter
    from oppu_hub.models import load_base

    folder = make_random_adapter(tiny_base, tmp_path / "pooled", user_id="pooled")
    prompts = ["article: harbor story category:", "article: violin concerto category:"]
    per_user = Generator(*load_base(str(tiny_base)))
    name = per_user.load(folder)
    model, tokenizer = load_base(str(tiny_base))
    pooled = Generator(load_user_adapter(model, None, folder), tokenizer).generate(prompts, None, 6)
    assert pooled == per_user.generate(prompts, [name, name], 6) != per_user.generate(prompts, None, 6)


def test_eval_reports_missing_golds(data, tiny_base, tmp_path, capsys):
    (data / "LaMP-2N" / "dev_questions.json").write_text((data / "LaMP-2N" / "test_questions.json").read_text())
    code = main(["eval", "--data_dir", str(data), "--workdir", str(tmp_path), "--split", "dev",
                 "--base.base_model", str(tiny_base), "--tasks", "LaMP-2N", "--methods", "np-k0", *TINY])
    assert code == 2 and "no gold outputs" in capsys.readouterr().err


# The dicts hashed into the folder names of the full leaderboard's (bench/eval_full.sh) LaMP-2N k0 base and user
# adapters, as runs/eval/{base,users}/*/eval_config.json recorded them before the configs were nested (the
# adapters' without the dropped "concurrent": 8). Only the data hashes differ on the test data.
EVAL_FULL_BASE = {
    "peft_type": "LORA", "lora_r": 8, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
    "num_virtual_tokens": 16, "task": "LaMP-2N", "k": 0, "profile": False, "learning_rate": 0.0005,
    "num_train_epochs": 1.0, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
    "max_prompt_length": 384, "precision": "auto", "seed": 42, "base_model": "SmolLM2-135M-Instruct",
    "include_history": True, "max_examples": 128, "train_data": "510ffbced0e8aec3", "profiles": None}
EVAL_FULL_USERS = {
    "base": "c6fc9474e6d3", "eval_data": "75a07d496028c319", "gradient_accumulation_steps": 1, "history": "",
    "history_format": "full", "k": 0, "learning_rate": 0.003, "lora_alpha": 16, "lora_dropout": 0.0, "lora_r": 16,
    "max_history": 16, "max_prompt_length": 384, "num_train_epochs": 2.0, "num_virtual_tokens": 16,
    "peft_type": "LORA", "per_device_train_batch_size": 4, "precision": "auto", "profile": False, "seed": 42,
    "split": "test", "target_modules": ["q_proj", "v_proj"], "task": "LaMP-2N"}
# The 128/16 protocol's settings in full (before the paper protocol of oppu_hub/protocol.py): its artifacts stay
# reachable by them, whatever the protocol's defaults and dev choices are now.
EVAL_FULL_FLAGS = ["--users", "40", "--base.max_examples", "128", "--base.num_train_epochs", "1",
                   "--base.learning_rate", "5e-4", "--base.per_device_train_batch_size", "4",
                   "--user.max_history", "16", "--user.learning_rate", "3e-3", "--user.num_train_epochs", "2",
                   "--user.lora_r", "16", "--user.target_modules", "q_proj", "v_proj"]


def eval_config(*flags: str):
    from oppu_hub.cli import build_parser, config_from_args
    from oppu_hub.pipeline_config import EvalConfig

    return config_from_args(EvalConfig, build_parser().parse_args(["eval", *flags]))


def test_artifact_hashes_are_stable(data, tmp_path):
    # Bases and adapters are found again by the hash of their settings: the same settings, however built, must
    # give the same folder as before (multi-hour artifacts are reused by it), and an execution detail none.
    from oppu_hub.pipeline import config_hash
    from oppu_hub.pipeline import hashable as _hashable
    from trainers import BaseTaskConfig

    assert config_hash(EVAL_FULL_BASE) == "c6fc9474e6d3"  # the recorded dicts name the recorded folders
    assert config_hash(EVAL_FULL_USERS) == "1a49760f574b"  # fcc770a9aede before, with "concurrent": 8
    flags = ["--data_dir", str(data), "--workdir", str(tmp_path), *EVAL_FULL_FLAGS]
    pipeline = Pipeline(eval_config(*flags), "lamp2n")
    base, hashed = pipeline.base_config(0)
    data_keys = {"train_data"}
    assert {k: v for k, v in hashed.items() if k not in data_keys} == {
        k: v for k, v in EVAL_FULL_BASE.items() if k not in data_keys}
    # The nested template filled in by the pipeline == a flat BaseTaskConfig (as train-base builds it).
    flat = BaseTaskConfig(task="LaMP-2N", data_dir="elsewhere", max_examples=128, num_train_epochs=1.0,
                          per_device_train_batch_size=4)
    assert _hashable(base) == _hashable(flat)
    assert Path(base.output_dir) == tmp_path / "base" / config_hash(hashed)

    users, hashed = pipeline.adapters_config(0)
    data_keys = {"base", "eval_data"}
    assert {k: v for k, v in hashed.items() if k not in data_keys} == {
        k: v for k, v in EVAL_FULL_USERS.items() if k not in data_keys}
    assert hashed["base"] == Path(base.output_dir).name and users.base_dir == str(base.target_dir())
    folder = Path(users.output_dir)
    for concurrent in ("1", "8"):  # how many users train together is not part of an adapter's identity
        other = Pipeline(eval_config(*flags, "--user.concurrent", concurrent), "LaMP-2N").adapters_config(0)[0]
        assert Path(other.output_dir) == folder and other.concurrent == int(concurrent)
    changed = Pipeline(eval_config(*flags, "--user.learning_rate", "0.01"), "LaMP-2N").adapters_config(0)[0]
    assert Path(changed.output_dir) != folder and changed.learning_rate == 0.01
    assert Path(changed.base_dir) == base.target_dir()  # the base is untouched by a user setting


def test_nested_flags_tuned_defaults_and_shared_settings():
    from oppu_hub.tuned import user_defaults
    from trainers import BaseTaskConfig, UserAdapterConfig

    config = eval_config(*EVAL_FULL_FLAGS[:6], "--user.max_history", "16")
    assert isinstance(config.base, BaseTaskConfig) and isinstance(config.user, UserAdapterConfig)
    assert (config.base.max_examples, config.base.num_train_epochs, config.user.max_history) == (128, 1.0, 16)
    assert config.user.learning_rate is None and config.user.concurrent == 0  # unset: tuned; executor: auto
    tuned = user_defaults("LaMP-2N")
    assert Pipeline(config, "LaMP-2N").tuned_settings() == {
        "learning_rate": tuned.learning_rate, "num_train_epochs": tuned.num_train_epochs,
        "target_modules": list(tuned.target_modules), "lora_r": tuned.lora_r, "lora_alpha": tuned.lora_r}
    # What the user gives wins; an unset alpha follows the rank given.
    given = Pipeline(eval_config("--user.learning_rate", "0.1", "--user.lora_r", "4"), "LaMP-2N").tuned_settings()
    assert given == {"num_train_epochs": tuned.num_train_epochs, "target_modules": list(tuned.target_modules),
                     "lora_alpha": 4}
    # A shared flag sets both stages; a stage's own flag wins over it.
    config = eval_config("--seed", "7", "--max_prompt_length", "200", "--user.seed", "8", "--precision", "fp32")
    assert (config.base.seed, config.user.seed) == (7, 8)
    assert config.base.max_prompt_length == config.user.max_prompt_length == 200
    assert config.base.precision == config.user.precision == "fp32"
    # The task is resolved once, when a config is built: aliases become the canonical name.
    assert dataclasses.replace(config.base, task="lamp2n").task == "LaMP-2N"


@pytest.mark.parametrize(("flags", "message"), [
    (["--user.learning_rate", "fast"], "--user.learning-rate: invalid float value: 'fast'"),
    (["--base.precision", "fp8"], "argument --base.precision: invalid choice: 'fp8'"),
    (["--base.task", "LaMP-3"], "unrecognized arguments: --base.task LaMP-3"),  # the pipeline sets it
])
def test_bad_nested_flags_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]


def test_a_stopped_task_resumes_method_by_method_and_tables_share_rows(data, tiny_base, tmp_path, monkeypatch):
    import oppu_hub.pipeline

    work, table = tmp_path / "work", tmp_path / "table"
    args = ["eval", "--data_dir", str(data), "--workdir", str(work), "--base.base_model", str(tiny_base),
            "--tasks", "LaMP-2N", "--methods", "np-k0", "oppu-k0", "rag-k1", "--out_dir", str(table), *TINY]
    predicted, real_predict = [], oppu_hub.pipeline.predict

    def stop_at_adapters(cfg, generator):
        if cfg.adapters_dir:
            raise RuntimeError("the session's time is up")
        predicted.append(cfg.k)
        return real_predict(cfg, generator)

    # The run stops at oppu-k0 (the baselines-then-k0-then-k1 order puts np-k0 first): np-k0's row is kept at once.
    with monkeypatch.context() as m:
        m.setattr(oppu_hub.pipeline, "predict", stop_at_adapters)
        assert main(args) == 2
    partial = json.loads((table / "rows" / "LaMP-2N.partial.json").read_text())["methods"]
    assert list(partial) == ["np-k0"] and predicted == [0] and not (table / "rows" / "LaMP-2N.json").exists()
    first = partial["np-k0"]
    assert first["seconds"] == first["row"]["seconds"] > 0 and first["machine"] == machine()
    # A fresh machine (no bases, adapters or views) with the written files predicts only the missing methods.
    shutil.rmtree(work)
    predicted.clear()
    with monkeypatch.context() as m:
        m.setattr(oppu_hub.pipeline, "predict", lambda cfg, g: predicted.append((cfg.k, bool(cfg.adapters_dir)))
                  or real_predict(cfg, g))
        assert main(args) == 0
    record = json.loads((table / "rows" / "LaMP-2N.json").read_text())
    assert [r["method"] for r in record["rows"]] == ["np-k0", "oppu-k0", "rag-k1"]
    assert predicted == [(0, True), (1, False)]
    assert record["rows"][0] == first["row"] and not (table / "rows" / "LaMP-2N.partial.json").exists()
    assert record["seconds"] == round(sum(r["seconds"] for r in record["rows"]), 1)
    # Another table with a method in common copies that row (and its file) in; only its own method is computed.
    other = tmp_path / "other"
    predicted.clear()
    with monkeypatch.context() as m:
        m.setattr(oppu_hub.pipeline, "predict", lambda cfg, g: predicted.append(cfg.adapters_dir)
                  or real_predict(cfg, g))
        assert main([*args[:args.index("--methods") + 1], "np-k0", "pooled-k0", "--out_dir", str(other), *TINY,
                     "--rows_from", str(table)]) == 0
    assert len(predicted) == 1  # pooled-k0 only (its adapter is part of the model: no adapters_dir)
    rows = {r["method"]: r for r in json.loads((other / "rows" / "LaMP-2N.json").read_text())["rows"]}
    copied = Path(rows["np-k0"]["predictions"])
    assert copied.parent == other / "predictions" / "LaMP-2N"
    assert copied.read_text() == Path(record["rows"][0]["predictions"]).read_text()
    assert rows["np-k0"]["scores"] == record["rows"][0]["scores"]
