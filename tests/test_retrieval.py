"""BM25 retrieval, no leakage from the future, the random-history baseline, and prompt budgets."""

from oppu_hub.prompts import HISTORY_HEADER, PROFILE_HEADER, PromptBuilder, history_examples
from oppu_hub.retrieval import BM25Retriever, RandomHistory, retrieve_before
from oppu_hub.tasks import get_task

NEWS = get_task("LaMP-2N")


def item(i, text, category="politics", date=None):
    d = {"id": str(i), "text": text, "title": f"t{i}", "category": category}
    if date:
        d["date"] = date
    return d


def test_bm25_ranks_the_relevant_item_first():
    items = [item(0, "the senate passed a budget bill"), item(1, "a recipe for lemon cake with sugar"),
             item(2, "football match ends in a draw")]
    hits = BM25Retriever(NEWS, items).retrieve("lemon cake recipe", 2)
    assert [h.item["id"] for h in hits] == ["1", hits[1].item["id"]]
    assert hits[0].score > hits[1].score
    assert BM25Retriever(NEWS, items).retrieve("anything", 0) == []
    assert BM25Retriever(NEWS, []).retrieve("anything", 3) == []


def test_retrieve_before_never_sees_later_or_same_day_items():
    history = [item(0, "cake one", date="2020-01-01"), item(1, "cake two", date="2020-01-02"),
               item(2, "cake three", date="2020-01-02"), item(3, "cake four", date="2020-01-03")]
    for i in range(len(history)):
        hits = retrieve_before(NEWS, history, i, "cake", k=10)
        assert all(h.item["date"] < history[i]["date"] for h in hits)
    assert [h.item["id"] for h in retrieve_before(NEWS, history, 2, "cake", 10)] == ["0"]
    undated = [item(i, f"cake {i}") for i in range(4)]
    assert sorted(h.item["id"] for h in retrieve_before(NEWS, undated, 2, "cake", 10)) == ["0", "1"]


def test_history_examples_retrieve_only_from_the_past():
    history = [item(i, f"marker{i} cake story", date=f"2020-01-0{i + 1}") for i in range(5)]
    rows = history_examples(PromptBuilder(NEWS), history, k=4)
    for i, row in enumerate(rows):
        assert row["completion"] == " politics"
        for j in range(len(history)):
            assert (f"marker{j} " in row["prompt"]) == (j <= i)  # its own text plus only earlier items
    assert HISTORY_HEADER not in rows[0]["prompt"]


def test_history_without_pairs_is_plain_text_for_pretraining():
    tweets = get_task("LaMP-7")
    rows = history_examples(PromptBuilder(tweets), [{"id": "1", "text": "flying  again"}], k=2)
    assert rows == [{"text": "flying again"}]


def test_random_history_comes_from_other_users_and_is_seeded():
    histories = {"a": [item(0, "mine")], "b": [item(1, "b1"), item(2, "b2")], "c": [item(3, "c1")]}
    rnd = RandomHistory(histories, seed=1)
    picks = rnd.sample("a", 2, key="q1")
    assert len(picks) == 2 and all(p.item["id"] != "0" for p in picks) and all(p.score is None for p in picks)
    again = RandomHistory(histories, seed=1).sample("a", 2, "q1")
    assert [p.item["id"] for p in picks] == [p.item["id"] for p in again]
    assert len(rnd.sample("a", 10)) == 3


def test_prompt_budget_truncates_history_and_profile_never_the_query():
    builder = PromptBuilder(NEWS, tokenizer=None, max_length=120)  # whitespace tokens
    query = {"text": " ".join(f"q{i}" for i in range(40))}
    long = [type("R", (), {"item": item(i, " ".join(["hist"] * 200))})() for i in range(3)]
    prompt = builder.build(query, long, profile=" ".join(["prof"] * 300))
    assert prompt.endswith(NEWS.prompt(query))
    assert prompt.startswith(PROFILE_HEADER) and HISTORY_HEADER in prompt
    assert len(prompt.split()) <= 120 + 3
    assert prompt.count("hist") > 0 and prompt.count("prof") > 0
    tiny = PromptBuilder(NEWS, tokenizer=None, max_length=10).build(query, long, profile="p")
    assert tiny == NEWS.prompt(query)  # the query alone exceeds the budget: kept whole, history dropped


def test_prompt_budget_with_a_real_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    builder = PromptBuilder(NEWS, tok, max_length=150)
    hist = [type("R", (), {"item": item(i, "word " * 300)})() for i in range(2)]
    prompt = builder.build({"text": "the query text"}, hist)
    assert len(tok(prompt).input_ids) <= 150 + 4
    assert prompt.endswith(NEWS.prompt({"text": "the query text"}))
