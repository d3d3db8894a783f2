"""The paired bootstrap over users: known answers on toy cases, seeding, and metrics equal to metrics.score."""

import numpy as np
import pytest

from oppu_hub.metrics import score
from oppu_hub.stats import Interval, PairedBootstrap, corpus_metrics, query_stats


def _toy(n_users: int, per_user: int = 2, gold: str = "sports") -> tuple[dict[str, str], dict[str, str]]:
    """Golds (all ``gold``) and the user of each query for ``n_users`` users with ``per_user`` queries each."""
    ids = [f"u{u}-q{j}" for u in range(n_users) for j in range(per_user)]
    return {i: gold for i in ids}, {i: i.split("-")[0] for i in ids}


def _number(qid: str) -> int:
    """A deterministic number from an id (``hash`` of a str changes between processes)."""
    return sum(map(ord, qid))


def test_identical_methods_give_a_zero_interval():
    golds, users = _toy(10)
    preds = {i: "sports" if n % 3 else "politics" for n, i in enumerate(golds)}
    boot = PairedBootstrap("LaMP-2N", golds, users)
    sums = boot.user_sums(preds)
    for metric, interval in boot.compare(sums, sums).items():
        assert interval == Interval(0.0, 0.0, 0.0), metric
        assert not interval.significant(True)


def test_better_on_every_user_by_d_gives_the_interval_d_d():
    golds, users = _toy(8, gold="3")
    boot = PairedBootstrap("LaMP-3", golds, users)
    worse = boot.user_sums({i: "4" for i in golds})  # |error| 1 on every query
    better = boot.user_sums({i: "3" if i.endswith("q0") else "4" for i in golds})  # each user: errors 0 and 1
    result = boot.compare(better, worse)
    assert result["mae"] == Interval(-0.5, -0.5, -0.5)
    assert result["rmse"].low == pytest.approx(result["rmse"].diff) == pytest.approx(0.5 ** 0.5 - 1)
    assert result["mae"].significant(higher_is_better=False) and not result["mae"].significant(True)
    assert not boot.compare(worse, better)["mae"].significant(False)  # a significant loss is no gain
    right, wrong = boot.user_sums({i: "3" for i in golds}), boot.user_sums({i: "1" for i in golds})
    assert boot.compare(right, wrong)["mae"] == Interval(-2.0, -2.0, -2.0)


def test_one_differing_user_among_many_is_not_significant():
    golds, users = _toy(50)
    base = {i: "politics" for i in golds}
    one = {i: "sports" if users[i] == "u0" else "politics" for i in golds}
    boot = PairedBootstrap("LaMP-2N", golds, users)
    accuracy = boot.compare(boot.user_sums(one), boot.user_sums(base))["accuracy"]
    assert accuracy.diff == pytest.approx(1 / 50)
    assert accuracy.low <= 0 <= accuracy.high and accuracy.high > 0
    assert not accuracy.significant(True)


def test_seeding_makes_intervals_deterministic():
    golds, users = _toy(20)
    a = {i: "sports" if _number(i) % 2 else "politics" for i in golds}
    b = {i: "sports" if _number(i) % 3 else "politics" for i in golds}

    def run(seed: int) -> dict[str, Interval]:
        boot = PairedBootstrap("LaMP-2N", golds, users, resamples=200, seed=seed)
        return boot.compare(boot.user_sums(a), boot.user_sums(b))

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert run(7)["accuracy"].diff == run(8)["accuracy"].diff


def test_a_single_user_gives_no_interval():
    golds, users = _toy(1)
    boot = PairedBootstrap("LaMP-2N", golds, users)
    result = boot.compare(boot.user_sums(golds), boot.user_sums({i: "travel" for i in golds}))
    assert result["accuracy"] == Interval(1.0, None, None) and not result["accuracy"].significant(True)


@pytest.mark.parametrize("task, golds, preds", [
    ("LaMP-2N", ["sports", "politics", "sports", "travel", "crime"],
     ["sports", "sports", "no idea", "travel", "religion"]),
    ("LaMP-3", ["1", "5", "3", "4"], ["2", "none", "3", "1"]),
    ("LaMP-5", ["a title about graphs", "deep nets", "x y z"], ["graphs title", "deep nets", ""]),
])
def test_statistics_reproduce_metrics_score(task, golds, preds):
    ids = [f"q{i}" for i in range(len(golds))]
    gold_map, pred_map = dict(zip(ids, golds, strict=True)), dict(zip(ids, preds, strict=True))
    stats = query_stats(task, pred_map, gold_map)
    assert corpus_metrics(task, stats.sum(axis=0)) == pytest.approx(score(task, pred_map, gold_map))
    # A resample (users drawn with repetition) scores like the duplicated sample: macro-F1 is recomputed, not
    # averaged over queries.
    weights = np.array([2, 0, 1, 3, 1][:len(ids)])
    dup_golds = {f"{i}#{r}": gold_map[i] for i, w in zip(ids, weights, strict=True) for r in range(w)}
    dup_preds = {f"{i}#{r}": pred_map[i] for i, w in zip(ids, weights, strict=True) for r in range(w)}
    assert corpus_metrics(task, weights @ stats) == pytest.approx(score(task, dup_preds, dup_golds))


def test_bootstrap_checks_its_inputs():
    golds, users = _toy(3)
    with pytest.raises(ValueError, match="no user"):
        PairedBootstrap("LaMP-2N", golds, {})
    with pytest.raises(ValueError, match="no prediction"):
        PairedBootstrap("LaMP-2N", golds, users).user_sums({})
