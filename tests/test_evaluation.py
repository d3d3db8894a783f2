"""The leaderboard (oppu-hub eval): Table 2 layout, scores == re-scored prediction files, reuse of trained models."""

import csv
import io
import json
from pathlib import Path

import pytest

from conftest import make_lamp2n
from oppu_hub.cli import main
from oppu_hub.data import read_predictions
from oppu_hub.evaluation import Method, build_table, format_csv, format_markdown, parse_method, rescore, write_table

TINY = ["--base_examples", "4", "--max_history", "3", "--user_epochs", "1", "--batch_size", "4",
        "--precision", "fp32", "--profile_tokens", "6", "--users", "2", "--max_prompt_length", "128"]


def test_method_names():
    assert parse_method("rag-k2") == Method("rag", 2)
    assert parse_method("PAG-OPPU-k1").profile and parse_method("pag-oppu-k1").oppu
    assert parse_method("random-k1").random_history and not parse_method("rag-k1").random_history
    for bad in ("np-k1", "random-k0", "bm25-k1", "rag"):
        with pytest.raises(ValueError):
            parse_method(bad)


def test_table_layout_best_marking_and_formats(tmp_path):
    rows = []
    for method, (acc, f1, mae, rmse) in {
        "oppu-k1": (0.5, 0.2, 0.9, 1.2), "np-k0": (0.1, 0.1, 0.5, 1.0), "rag-k1": (0.5, 0.3, 1.0, 1.1),
        "pag-oppu-k0": (0.2, 0.1, 2.0, 2.5), "random-k1": (0.0, 0.0, 1.5, 1.5), "pag-k0": (0.3, 0.1, 0.5, 0.7),
    }.items():
        rows.append({"task": "LaMP-3", "method": method, "scores": {"mae": mae, "rmse": rmse}})
        rows.append({"task": "LaMP-2N", "method": method, "scores": {"accuracy": acc, "f1": f1}})
    table = build_table(rows)
    # The paper's column order: Non-Personalized (k=0, random), RAG, PAG, RAG+OPPU, PAG+OPPU.
    assert [c["method"] for c in table["columns"]] == ["np-k0", "random-k1", "rag-k1", "pag-k0", "oppu-k1",
                                                       "pag-oppu-k0"]
    assert [c["group"] for c in table["columns"]] == ["Non-Personalized", "Non-Personalized", "RAG", "PAG",
                                                      "RAG+OPPU", "PAG+OPPU"]
    # Task order follows the registry; two metric rows per task.
    assert [(r["task"], r["metric"]) for r in table["rows"]] == [("LaMP-2N", "accuracy"), ("LaMP-2N", "f1"),
                                                                 ("LaMP-3", "mae"), ("LaMP-3", "rmse")]
    best = {(r["task"], r["metric"]): r["best"] for r in table["rows"]}
    assert best[("LaMP-2N", "accuracy")] == ["rag-k1", "oppu-k1"]  # a tie: both marked
    assert best[("LaMP-2N", "f1")] == ["rag-k1"]
    assert best[("LaMP-3", "mae")] == ["np-k0", "pag-k0"]  # lower is better
    assert best[("LaMP-3", "rmse")] == ["pag-k0"]
    md = format_markdown(table).splitlines()
    assert md[0] == ("| task | metric | Non-Personalized k=0 | Non-Personalized random k=1 | RAG k=1 | PAG k=0 | "
                     "RAG+OPPU k=1 | PAG+OPPU k=0 |")
    assert md[2] == "| LaMP-2N | accuracy ↑ | 0.100 | 0.000 | **0.500** | 0.300 | **0.500** | 0.200 |"
    assert md[5] == "| LaMP-3 | rmse ↓ | 1.000 | 1.500 | 1.100 | **0.700** | 1.200 | 2.500 |"
    parsed = list(csv.DictReader(io.StringIO(format_csv(table))))
    assert parsed[2]["metric"] == "mae" and parsed[2]["best"] == "np-k0 pag-k0" and float(parsed[2]["np-k0"]) == 0.5
    paths = write_table(table, tmp_path, meta={"date": "today"})
    written = json.loads(paths["json"].read_text())
    assert written["rows"] == table["rows"] and written["meta"]["date"] == "today"
    assert paths["md"].read_text().strip() == "\n".join(md) and paths["csv"].read_text() == format_csv(table)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lamp2n(tmp_path_factory.mktemp("data"), {"train": 3, "test": 3}, history=5)


def test_eval_writes_official_files_and_reuses_everything(data, tiny_base, tmp_path, capsys, monkeypatch):
    from trainers.base import BaseTaskTrainer
    from trainers.user import UserAdapterTrainer

    work = tmp_path / "work"
    args = ["eval", "--data_dir", str(data), "--workdir", str(work), "--base_model", str(tiny_base),
            "--tasks", "LaMP-2N", "--methods", "np-k0", "random-k1", "rag-k1", "pag-k0", "oppu-k0", *TINY]
    trained = []
    orig_base, orig_user = BaseTaskTrainer.train, UserAdapterTrainer.train
    monkeypatch.setattr(BaseTaskTrainer, "train", lambda self, **kw: trained.append("base") or orig_base(self, **kw))
    monkeypatch.setattr(UserAdapterTrainer, "train", lambda self, **kw: trained.append("user") or orig_user(self, **kw))
    assert main(args) == 0
    assert trained.count("base") == 3 and trained.count("user") == 2  # bases k0, k1, k0-profile; 2 users' adapters
    printed = capsys.readouterr().out
    result = json.loads((work / "results" / "leaderboard.json").read_text())
    assert (work / "results" / "leaderboard.md").read_text().strip() in printed
    assert [c["method"] for c in result["columns"]] == ["np-k0", "random-k1", "rag-k1", "pag-k0", "oppu-k0"]
    golds_path = work / "results" / "predictions" / "LaMP-2N" / "golds.json"
    golds = json.loads(golds_path.read_text())
    assert golds["task"] == "LaMP_2" and [g["id"] for g in golds["golds"]] == ["q3", "q4"]  # the first 2 test users
    for row in result["meta"]["results"]:
        preds = json.loads(Path(row["predictions"]).read_text())
        assert preds["task"] == "LaMP_2" and sorted(g["id"] for g in preds["golds"]) == ["q3", "q4"]
        assert set(read_predictions(row["predictions"])) == {"q3", "q4"}
        # What the table says is what the written files score.
        rescored = rescore(row["predictions"], golds_path, "LaMP-2N")
        assert rescored == row["scores"]
        for r in result["rows"]:
            assert r["scores"][row["method"]] == rescored[r["metric"]]
    models = sorted(work.glob("base/*/LaMP-2N/*/model.safetensors")) + sorted(work.glob("users/*/LaMP-2N/*/*/"
                                                                                       "adapter_model.safetensors"))
    assert len(models) == 3 + 2
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
    # A changed adapter setting trains new adapters (in a new folder) on the reused base; one more user only
    # trains that user.
    assert main([*args[:-len(TINY)], *TINY, "--methods", "oppu-k0", "--user_epochs", "2"]) == 0
    assert trained == ["user", "user"]
    trained.clear()
    assert main([*args, "--methods", "oppu-k0", "--users", "3"]) == 0
    assert trained == ["user"]
    assert len(list(work.glob("users/*/LaMP-2N/k0-lora"))) == 2


def test_eval_reports_missing_golds(data, tiny_base, tmp_path, capsys):
    (data / "LaMP-2N" / "dev_questions.json").write_text((data / "LaMP-2N" / "test_questions.json").read_text())
    code = main(["eval", "--data_dir", str(data), "--workdir", str(tmp_path), "--split", "dev",
                 "--base_model", str(tiny_base), "--tasks", "LaMP-2N", "--methods", "np-k0", *TINY])
    assert code == 2 and "no gold outputs" in capsys.readouterr().err
