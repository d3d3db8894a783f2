"""Metrics against hand-computed values with LaMP's official evaluation semantics, through both ways in: the project's
``score`` and the ``evaluate`` module loaded offline from its folder."""

import json
import math
import os
import subprocess
import sys

import pytest

from oppu_hub.lamp_metric import PATH
from oppu_hub.lamp_metric.core import TASKS as LAMP_TASKS
from oppu_hub.metrics import score
from oppu_hub.tasks import TASKS

# (task, predictions, golds, expected) with exact labels/numbers, where the official script, the evaluate module and
# score() must agree.
OFFICIAL_CASES = [
    # politics P=1 R=.5 -> 2/3; travel P=.5 R=1 -> 2/3; crime 0; "astrology" (no label) is wrong; 12 absent labels 0
    ("LaMP-2N", ["politics", " travel ", "travel", "astrology"], ["politics", "politics", "travel", "crime"],
     {"accuracy": 2 / 4, "f1": (2 / 3 + 2 / 3) / 15}),
    ("LaMP-1", ["[1]", "[2]", "[1]"], ["[1]", "[2]", "[2]"], {"accuracy": 2 / 3, "f1": 2 / 3}),  # both: P,R = 1,.5
    ("LaMP-2M", ["comedy", "classic"], ["comedy", "comedy"], {"accuracy": 1 / 2, "f1": (2 / 3) / 15}),
    # errors 1; "no score" for gold 2 -> 5: 3; "" for gold 4 -> 1: 3; gold 3 is a tie -> 5: 2
    ("LaMP-3", ["4", "no score", "", "nothing"], ["5", "2", "4", "3"],
     {"mae": (1 + 3 + 3 + 2) / 4, "rmse": math.sqrt((1 + 9 + 9 + 4) / 4)}),
    # "the cat sat" vs "the cat sat down": P=1 R=3/4 -> F 6/7 for both; "sat the cat": unigrams 1, LCS 2/3
    ("LaMP-5", ["the cat sat", "completely different", "sat the cat"], ["the cat sat down", "a dog", "the cat sat"],
     {"rouge-1": (6 / 7 + 0 + 1) / 3, "rouge-l": (6 / 7 + 0 + 2 / 3) / 3}),
]

_SCRIPT = """
import json, sys
import evaluate
cases = json.load(sys.stdin)
out = {"results": [], "errors": {}}
for task, preds, refs in cases:
    metric = evaluate.load(sys.argv[1], task)
    out["results"].append(metric.compute(predictions=preds, references=refs))
for name, (task, preds, refs) in {"bad_gold": ("LaMP-2N", ["politics"], ["astrology"]),
                                  "bad_rating": ("LaMP-3", ["4"], ["five"])}.items():
    try:
        evaluate.load(sys.argv[1], task).compute(predictions=preds, references=refs)
    except ValueError as e:
        out["errors"][name] = str(e)
try:
    evaluate.load(sys.argv[1])
except KeyError as e:
    out["errors"]["no_config"] = str(e)
from oppu_hub.metrics import load_metric
out["load_metric"] = load_metric("LaMP-3", keep_in_memory=True).compute(predictions=["4"], references=["5"])
print(json.dumps(out))
"""

# The module scores raw strings exactly as LaMP does; score() first normalises answers with the task's parser.
RAW_CASES = [
    ("LaMP-2N", ["Politics.", "the category is travel"], ["politics", "travel"]),
    ("LaMP-3", ["4.5", "6"], ["5", "5"]),
]


@pytest.fixture(scope="module")
def module_results(tmp_path_factory):
    """Load the evaluate module from its folder in a fresh process with no network and an empty cache."""
    home = tmp_path_factory.mktemp("hf_home")
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    cases = [(t, p, g) for t, p, g, _ in OFFICIAL_CASES] + RAW_CASES
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(PATH)], input=json.dumps(cases), env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", OFFICIAL_CASES, ids=[c[0] for c in OFFICIAL_CASES])
def test_score_matches_hand_computed_official_values(case):
    task, preds, golds, expected = case
    ids = [f"q{i}" for i in range(len(golds))]
    result = score(task, dict(zip(ids, preds, strict=True)), dict(zip(ids, golds, strict=True)))
    assert result == pytest.approx(expected)
    assert list(result) == list(TASKS[task].metric_names)


def test_evaluate_module_loads_offline_and_matches_hand_computed_values(module_results):
    results = module_results["results"][:len(OFFICIAL_CASES)]
    for (task, _, _, expected), result in zip(OFFICIAL_CASES, results, strict=True):
        assert result == pytest.approx(expected), task


def test_evaluate_module_scores_raw_strings_as_lamp_does(module_results):
    news, rating = module_results["results"][len(OFFICIAL_CASES):]
    assert news == pytest.approx({"accuracy": 0.0, "f1": 0.0})  # LaMP matches labels exactly
    assert rating == pytest.approx({"mae": 0.75, "rmse": math.sqrt((0.25 + 1) / 2)})  # float() reads 4.5 and 6
    # score() reads the label / first rating digit out of the same answers
    assert score("LaMP-2N", {"a": "Politics.", "b": "the category is travel"}, {"a": "politics", "b": "travel"}) \
        == pytest.approx({"accuracy": 1.0, "f1": 2 / 15})
    assert score("LaMP-3", {"a": "4.5", "b": "6"}, {"a": "5", "b": "5"}) == pytest.approx({"mae": 2.5,
                                                                                       "rmse": math.sqrt(8.5)})


def test_evaluate_module_errors(module_results):
    errors = module_results["errors"]
    assert "gold 'astrology' is not one of the task's labels" in errors["bad_gold"]
    assert "gold 'five' is not a rating" in errors["bad_rating"]
    assert "unknown LaMP task config 'default'" in errors["no_config"]


def test_load_metric_loads_the_package_folder(module_results):
    assert module_results["load_metric"] == {"mae": 1.0, "rmse": 1.0}


def test_metric_configs_are_the_task_registry():
    assert {t.name: (t.kind, t.labels if t.kind == "classification" else ()) for t in TASKS.values()} == LAMP_TASKS


def test_missing_prediction_and_bad_gold():
    with pytest.raises(ValueError, match="no prediction for 1 gold ids"):
        score("LaMP-3", {}, {"a": "5"})
    with pytest.raises(ValueError, match="LaMP-2N: gold 'astrology' is not one of the task's labels"):
        score("LaMP-2N", {"a": "politics"}, {"a": "astrology"})
    with pytest.raises(ValueError, match="LaMP-3: gold 'five' is not a rating"):
        score("LaMP-3", {"a": "4"}, {"a": "five"})


def test_no_queries_score_zero():
    assert score("LaMP-2N", {}, {}) == {"accuracy": 0.0, "f1": 0.0}
    assert score("LaMP-3", {}, {}) == {"mae": 0.0, "rmse": 0.0}
