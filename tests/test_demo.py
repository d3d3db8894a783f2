"""``oppu-hub demo`` end to end on the real sources with the tiny model: the k=0 columns beside the baselines,
bootstrap intervals, and the Space's default paths pointing at what was trained."""

import json

import pytest

from conftest import SHARED_DATA
from oppu_hub.adapters import AdapterRecord
from oppu_hub.cli import main


def test_demo_table_and_space_links(tiny_base, tmp_path, capsys):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the public source data is not at {SHARED_DATA}")
    work = tmp_path / "demo"
    assert main(["demo", "--source_dir", str(SHARED_DATA), "--workdir", str(work), "--base.base_model",
                 str(tiny_base), "--tasks", "LaMP-2N", "--users", "3", "--base.max_examples", "4",
                 "--user.max_history", "3", "--user.num_train_epochs", "1", "--precision", "fp32",
                 "--max_prompt_length", "128", "--resamples", "50"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((work / "results" / "leaderboard.json").read_text())
    assert [c["method"] for c in result["columns"]] == ["majority", "user-majority", "bm25-copy", "np-k0", "oppu-k0"]
    assert {r["metric"]: r["n"] for r in result["rows"]} == {m: {"queries": 9, "users": 3} for m in ("accuracy", "f1")}
    assert "Δ vs np-k0" in printed
    assert ("Demo protocol: bases on up to 4 training examples for 1 epoch(s); 3 test users, adapters on their "
            "newest 3 history items") in printed and "bench/results/leaderboard" in printed
    by_method = {r["method"]: r for r in result["meta"]["results"]}
    for k in (0,):  # each column's base and adapters were trained with its own prompts
        rag, oppu = by_method["np-k0"], by_method[f"oppu-k{k}"]
        assert rag["base"] == oppu["base"] and rag["base"].endswith(f"/k{k}")
        folder = next(p for p in (work / "space" / "users" / "LaMP-2N" / f"k{k}-lora").iterdir() if p.is_dir())
        assert AdapterRecord.from_folder(folder).k == k
        assert (work / "space" / "base" / "LaMP-2N" / f"k{k}").resolve() == (work / rag["base"]).resolve()


def test_space_links_for_the_two_stage_column(tmp_path):
    """A demo run with ``two-stage-k0`` also links the collective base and the adapters on it, where the Space's
    two-stage column looks (``SpaceConfig`` defaults), beside the OPPU column's own."""
    from oppu_hub.compare_config import SpaceConfig
    from oppu_hub.demo import link_space_paths

    work = tmp_path / "demo"
    folders = {name: work / name for name in ("base/h1/LaMP-2N/k0", "users/h2/LaMP-2N/k0-lora",
                                              "base/h3/LaMP-2N/k0-collective-train", "users/h4/LaMP-2N/k0-lora")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    base, oppu, collective, residuals = (str(f) for f in folders.values())
    link_space_paths(work, [{"task": "LaMP-2N", "method": "oppu-k0", "base": base, "adapters": oppu},
                            {"task": "LaMP-2N", "method": "two-stage-k0", "base": collective, "adapters": residuals},
                            {"task": "LaMP-2N", "method": "np-k0", "base": base, "adapters": None}])
    defaults = SpaceConfig()
    for template, target in ((defaults.base_dir, base), (defaults.adapters_dir, oppu),
                             (defaults.two_stage_base_dir, collective), (defaults.two_stage_adapters_dir, residuals)):
        link = work / defaults.fill(template, "LaMP-2N", 0).removeprefix("runs/demo/")
        assert link.resolve() == folders[target.removeprefix(f"{work}/")].resolve(), template
