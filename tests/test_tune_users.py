"""bench/tune_users.py's choice rule and how a sweep extends the rows of an earlier one (never drops them)."""

import importlib.util
import sys

import pytest

from conftest import REPO
from oppu_hub.io import write_json

_spec = importlib.util.spec_from_file_location("tune_users", REPO / "bench" / "tune_users.py")
tune_users = sys.modules["tune_users"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(tune_users)


def row(score, lr=1e-3, epochs=2.0, target="qv", rank=16, metric="accuracy"):
    return {"lr": lr, "epochs": epochs, "target": target, "rank": rank, "scores": {metric: score}}


def test_choose_takes_the_cheapest_setting_within_one_query_of_the_best():
    # 10 queries: within 0.1 of the best (0.9) counts as a tie.
    rows = [row(0.9, epochs=5.0), row(0.8, epochs=2.0, rank=16), row(0.81, epochs=2.0, rank=8),
            row(0.85, epochs=2.0, rank=8, lr=3e-3), row(0.82, epochs=2.0, target="all-linear", rank=8)]
    chosen = tune_users.choose("LaMP-2N", rows, n_queries=10)
    assert (chosen["epochs"], chosen["rank"], chosen["lr"]) == (2.0, 8, 3e-3)  # r=8 at 2 ep; the better of the two
    # 100 queries: only 0.01 is a tie, so the 5-epoch setting stands alone.
    assert tune_users.choose("LaMP-2N", rows, n_queries=100)["epochs"] == 5.0
    # Lower is better for MAE (LaMP-3): 0.30 is the best, 0.35 is within 1/10 of it and cheaper.
    mae = [row(0.30, epochs=3.0, metric="mae"), row(0.35, epochs=2.0, metric="mae"), row(0.5, epochs=1.0, metric="mae")]
    assert tune_users.choose("LaMP-3", mae, n_queries=10)["epochs"] == 2.0


def test_a_sweep_extends_the_rows_of_an_earlier_one_and_refuses_another(tmp_path):
    path = tmp_path / "tune_users-LaMP-2N.json"
    config = {"users": 16, "user": {"max_history": 16}}
    assert tune_users.earlier_rows(path, config, "data1") == []  # nothing yet
    write_json(path, {"config": config, "data": "data1", "rows": [row(0.8)]})
    assert tune_users.earlier_rows(path, config, "data1") == [row(0.8)]
    for other_config, other_data in (({"users": 8, "user": {"max_history": 16}}, "data1"), (config, "data2")):
        with pytest.raises(SystemExit, match="--replace"):
            tune_users.earlier_rows(path, other_config, other_data)
    assert tune_users.earlier_rows(path, config, "data2", replace=True) == []
    write_json(path, {"config": config, "rows": [row(0.8)]})  # written before sweeps recorded their data
    with pytest.raises(SystemExit, match="other settings or data"):
        tune_users.earlier_rows(path, config, "data1")
