"""Metrics against hand-computed values, including unparseable predictions."""

import math

import pytest

from oppu_hub.metrics import score


def test_classification_accuracy_and_macro_f1_over_the_label_set():
    golds = {"1": "politics", "2": "politics", "3": "travel", "4": "crime"}
    preds = {"1": "Politics.", "2": "travel", "3": "travel", "4": "no idea"}
    s = score("LaMP-2N", preds, golds)
    assert s["accuracy"] == pytest.approx(2 / 4)
    # per class F1: politics P=1 R=.5 -> 2/3; travel P=.5 R=1 -> 2/3; crime 0; 12 absent labels 0.
    assert s["f1"] == pytest.approx((2 / 3 + 2 / 3) / 15)


def test_citation_labels():
    s = score("LaMP-1", {"a": "[1]", "b": "1", "c": "xx"}, {"a": "[1]", "b": "[2]", "c": "[2]"})
    assert s["accuracy"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx((2 / 3 + 0) / 2)  # [1]: P=.5 R=1; [2]: none right


def test_rating_unparseable_counts_as_the_farthest_rating():
    s = score("LaMP-3", {"a": "4", "b": "no score", "c": "nothing"}, {"a": "5", "b": "2", "c": "4"})
    errors = [1, 3, 3]  # gold 2 -> predicted 5; gold 4 -> predicted 1
    assert s["mae"] == pytest.approx(sum(errors) / 3)
    assert s["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 3))


def test_rouge():
    s = score("LaMP-5", {"a": "the cat sat", "b": "completely different"}, {"a": "the cat sat down", "b": "a dog"})
    r1_a = 2 * (1 * 0.75) / (1 + 0.75)
    assert s["rouge-1"] == pytest.approx(r1_a / 2)
    assert s["rouge-l"] == pytest.approx(r1_a / 2)


def test_missing_prediction_and_bad_gold():
    with pytest.raises(ValueError, match="no prediction for 1 gold ids"):
        score("LaMP-3", {}, {"a": "5"})
    with pytest.raises(ValueError, match="gold 'astrology' is not one of the task's labels"):
        score("LaMP-2N", {"a": "politics"}, {"a": "astrology"})
