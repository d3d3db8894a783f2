"""The model-free baselines and the pooled-history view, on tiny hand-made splits with known answers."""

import pytest

from oppu_hub.baselines import (
    BASELINES,
    POOLED_USER,
    applies,
    bm25_copy,
    global_majority,
    pooled_split,
    predict_baseline,
    user_majority,
)
from oppu_hub.data import LampSplit, Question, load_task_split, write_split
from oppu_hub.inference import PredictConfig, build_prompts
from oppu_hub.metrics import score
from oppu_hub.tasks import get_task


def _split(task_name: str, users: dict[str, list[dict]], queries: dict[str, list[str]] | None = None,
           golds: list[str] | None = None) -> LampSplit:
    """One question per query text (default: one per user; the text fills every query field) whose history is
    the user's items (dated in order)."""
    task = get_task(task_name)
    questions = []
    for user, items in users.items():
        profile = [{"id": f"{user}-{j}", "date": f"2020-01-{j + 1:02d}", **item} for j, item in enumerate(items)]
        for text in (queries or {}).get(user, ["a query"]):
            query = task.format_input(**dict.fromkeys(task.query_fields, text))
            questions.append(Question(f"q{len(questions)}", query, profile, user))
    for q, gold in zip(questions, golds or [], strict=False):
        q.gold = gold
    return LampSplit(task, questions)


def _news(*categories: str) -> list[dict]:
    return [{"text": f"story {c}", "title": c, "category": c} for c in categories]


def _reviews(*scores: str) -> list[dict]:
    return [{"text": f"review {s}", "score": s} for s in scores]


def test_which_baselines_each_task_has():
    defined = {t: [b for b in BASELINES if applies(b, get_task(t))]
               for t in ("LaMP-1", "LaMP-2N", "LaMP-2M", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-7")}
    assert defined == {"LaMP-1": ["majority"], "LaMP-2N": list(BASELINES), "LaMP-2M": list(BASELINES),
                       "LaMP-3": list(BASELINES), "LaMP-4": ["bm25-copy"], "LaMP-5": ["bm25-copy"],
                       "LaMP-7": ["bm25-copy"]}
    split = _split("LaMP-4", {"u": [{"text": "t", "title": "x"}]})
    with pytest.raises(ValueError, match="not defined for LaMP-4"):
        predict_baseline("majority", split, ["u"], split)
    with pytest.raises(ValueError, match="unknown baseline"):
        applies("oracle", get_task("LaMP-4"))


def test_global_majority_reads_train_golds_only():
    # sports and politics tie (2 each): the task's label order decides (sports comes first); "" is skipped.
    train = _split("LaMP-2N", {f"t{i}": _news("travel") for i in range(6)},
                   golds=["sports", "politics", "politics", "sports", "travel", ""])
    assert global_majority(train) == "sports"
    test = _split("LaMP-2N", {"a": _news("crime"), "b": _news("crime")}, golds=["crime", "crime"])
    predictions = predict_baseline("majority", test, ["a", "b"], train)
    assert predictions == {"q0": "sports", "q1": "sports"}  # never the evaluated users' golds
    lamp1 = _split("LaMP-1", {"p": [{"title": "t", "abstract": "a"}]} | {"r": [{"title": "t", "abstract": "a"}]},
                   {"p": ["x", "y"], "r": ["z"]}, golds=["[2]", "[1]", "[2]"])
    assert global_majority(lamp1) == "[2]"
    with pytest.raises(ValueError, match="no gold labels"):
        global_majority(_split("LaMP-2N", {"t": _news("travel")}))


def test_global_mean_rating_is_a_valid_rounded_rating():
    train = _split("LaMP-3", {f"t{i}": _reviews("3") for i in range(4)}, golds=["1", "2", "5", "5"])
    assert global_majority(train) == "3"  # mean 3.25
    assert global_majority(_split("LaMP-3", {"a": _reviews("3"), "b": _reviews("3")}, golds=["4", "5"])) == "5"
    test = _split("LaMP-3", {"u": _reviews("1")}, golds=["2"])
    predictions = predict_baseline("majority", test, ["u"], train)
    assert predictions == {"q0": "3"} and score("LaMP-3", predictions, {"q0": "2"}) == {"mae": 1.0, "rmse": 1.0}


def test_user_majority_breaks_ties_by_recency():
    split = _split("LaMP-2N", {"tie": _news("politics", "sports", "sports", "politics"),
                               "clear": _news("crime", "crime", "travel"),
                               "late": _news("sports", "politics")},
                   {"tie": ["one", "two"], "clear": ["three"], "late": ["four"]})
    assert user_majority(split, ["tie", "clear", "late"]) == {"q0": "politics", "q1": "politics", "q2": "crime",
                                                              "q3": "politics"}
    assert user_majority(split, ["clear"]) == {"q2": "crime"}


def test_user_mean_rating():
    split = _split("LaMP-3", {"a": _reviews("4", "5"), "b": _reviews("1", "2", "2")})
    assert user_majority(split, ["a", "b"]) == {"q0": "5", "q1": "2"}  # 4.5 rounds up, 1.67 to 2


def test_bm25_copy_copies_the_top_history_items_output():
    # The newest item wins BM25 ties, so each expected item is an older one.
    articles = [{"text": "the harbor flooded after the storm", "title": "Storm floods harbor"},
                {"text": "new violin concerto premieres", "title": "Violin premiere"},
                {"text": "markets rally on earnings", "title": "Stocks up"}]
    split = _split("LaMP-4", {"u": articles}, {"u": ["a violin concerto review", "harbor storm damage"]})
    assert bm25_copy(split, ["u"]) == {"q0": "Violin premiere", "q1": "Storm floods harbor"}
    tweets = _split("LaMP-7", {"u": [{"text": "rainy day in the city"}, {"text": "coffee first, then code"},
                                     {"text": "weekend hike done"}]}, {"u": ["the city is rainy today"]})
    assert bm25_copy(tweets, ["u"]) == {"q0": "rainy day in the city"}
    news = _split("LaMP-2N", {"u": [{"text": "match results football", "title": "y", "category": "sports"},
                                    {"text": "election results", "title": "x", "category": "politics"},
                                    {"text": "new museum wing", "title": "z", "category": "culture & arts"}]},
                  {"u": ["football match tonight"]})
    assert predict_baseline("bm25-copy", news, ["u"], news) == {"q0": "sports"}


def test_pooled_split_joins_histories_in_time_order(tmp_path):
    split = _split("LaMP-2N", {"a": _news("crime", "travel", "sports"), "b": _news("politics", "women")},
                   {"a": ["one", "two"], "b": ["three"]}, golds=["crime", "crime", "women"])
    pooled = pooled_split(split, ["a", "b"], max_history=2)
    assert pooled.user_ids == [POOLED_USER] and len(pooled.questions) == 1
    history = pooled.user_history(POOLED_USER)
    # Each user's 2 most recent items, ordered by date (a's items are days 2-3, b's days 1-2).
    assert [(i["id"], i["date"]) for i in history] == [("b/b-0", "2020-01-01"), ("a/a-1", "2020-01-02"),
                                                       ("b/b-1", "2020-01-02"), ("a/a-2", "2020-01-03")]
    write_split(pooled, tmp_path / "LaMP-2N", "test")  # a valid LaMP file (unique item ids, parseable input)
    assert load_task_split(tmp_path, "LaMP-2N", "test").user_history(POOLED_USER) == history
    assert len(pooled_split(split, ["a", "b"]).user_history(POOLED_USER)) == 5
    with pytest.raises(ValueError, match="at least one user"):
        pooled_split(split, [])


def _coauthored() -> LampSplit:
    """LaMP-5 users a and b: b's query abstract is also an item of a's history (case and spacing aside)."""
    papers = {"a": [{"title": "Shared paper", "abstract": "We  study SHARED things."},
                    {"title": "Own paper", "abstract": "We study own things."}],
              "b": [{"title": "Earlier paper", "abstract": "Earlier work."}]}
    return _split("LaMP-5", papers, {"a": ["an unrelated abstract"], "b": ["we study shared things."]},
                  golds=["A title", "Shared paper"])


def test_pooled_split_leaves_out_items_that_are_evaluated_queries():
    # The co-authored paper must not be trained on; a's other paper and b's history stay.
    split = _coauthored()
    pooled = pooled_split(split, ["a", "b"]).user_history(POOLED_USER)
    assert sorted(i["title"] for i in pooled) == ["Earlier paper", "Own paper"]
    # Only evaluated users' queries count: without b, a's copy of the paper is not a query's.
    assert len(pooled_split(split, ["a"]).user_history(POOLED_USER)) == 2
    # Unpaired history (LaMP-7): an item equal to a query's gold (the user's tweet) is left out.
    tweets = _split("LaMP-7", {"a": [{"text": "Snow again at the airport"}, {"text": "coffee time"}],
                               "b": [{"text": "gate changed twice"}]},
                    {"a": ["a paraphrase"], "b": ["it is snowing at the airport"]},
                    golds=["x", "snow again at the airport"])
    assert [i["text"] for i in pooled_split(tweets, ["a", "b"]).user_history(POOLED_USER)] == [
        "gate changed twice", "coffee time"]


def test_random_history_never_draws_the_query_itself():
    # random-kN fills the prompt with other users' items: b's query paper, co-authored and in a's history, must
    # not be one of them (nor, in its title, the answer); a's other paper may.
    split = _coauthored()
    config = PredictConfig(task="LaMP-5", random_history=True, k=5)
    _, owners, prompts = build_prompts(config, split, ["a", "b"], tokenizer=None)
    by_user = dict(zip(owners, prompts, strict=True))
    assert "Own paper" in by_user["b"] and "Shared paper" not in by_user["b"]
    assert "Earlier paper" in by_user["a"]  # a's query is nobody's item: b's whole history is drawn
