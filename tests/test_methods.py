"""One definition of a method (oppu_hub/methods.py): what eval, predict --method and the Space's columns predict
with."""

import pytest

from oppu_hub.data import newest_items
from oppu_hub.methods import SPACE_COLUMNS, Method, parse_method
from oppu_hub.predict_config import PredictConfig


def test_prediction_settings_follow_the_family():
    assert parse_method("pag-k2").prediction_settings() == {
        "k": 2, "profile": True, "random_history": False, "contrastive": False, "prior": False, "answers": "generate"}
    assert parse_method("random-k1").prediction_settings("labels")["random_history"]
    assert parse_method("oppu-cd-k1").prediction_settings("labels")["answers"] == "generate"
    assert parse_method("prior-np-k0").prediction_settings()["answers"] == "labels"
    with pytest.raises(ValueError, match="model-free baseline"):
        parse_method("majority").prediction_settings()


def test_predict_method_flag_sets_what_eval_sets():
    config = PredictConfig(task="LaMP-2N", method="OPPU-CD-k1", adapters_dir="users", answers="labels")
    assert (config.method, config.k, config.contrastive, config.answers) == ("oppu-cd-k1", 1, True, "generate")
    assert PredictConfig(task="LaMP-2N", method="pag-k1", k=1).profile
    for kwargs, message in [({"method": "rag-k2", "k": 1}, "--k 1 contradicts --method rag-k2"),
                            ({"method": "oppu-k0"}, "needs --adapters_dir"),
                            ({"method": "rag-k1", "adapters_dir": "users"}, "takes no --adapters_dir"),
                            ({"method": "pooled-k0"}, "run by oppu-hub eval"),
                            ({"method": "bm25-copy"}, "run by oppu-hub eval")]:
        with pytest.raises(ValueError, match=message):
            PredictConfig(task="LaMP-2N", **kwargs)


def test_space_columns_are_methods_at_k0_or_the_visitors_k():
    assert [c.method(2) for c in SPACE_COLUMNS] == [Method("np", 0), Method("rag", 2), Method("oppu", 0),
                                                    Method("oppu", 2)]
    assert [c.name for c in SPACE_COLUMNS] == ["non-personalized", "RAG", "OPPU", "OPPU + RAG"]


def test_newest_items_keeps_the_last_n_or_everything():
    assert newest_items(range(5), 2) == [3, 4]
    assert newest_items(range(3), None) == newest_items(range(3), 0) == [0, 1, 2]
