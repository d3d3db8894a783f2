"""The comparison behind the Space (oppu_hub.compare, compare_make, compare_defaults, compare_view), without Gradio:
every column answers with the model of its k, only trained k are offered, answers are marked against the gold and
the labels, label scoring and contrastive decoding, a visitor's adapter trained for every setting the columns need
with its progress step by step, the first query shown, and how results read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oppu_hub.compare import Backend
from oppu_hub.compare_config import (
    ANONYMOUS,
    FREE_TEXT,
    HELD_OUT,
    LABELS,
    QUERY_ID,
    SpaceConfig,
    SpaceError,
    variant_ks,
)
from oppu_hub.compare_defaults import pick_default
from oppu_hub.compare_make import read_history
from oppu_hub.compare_view import (
    OFF_LABELS,
    RIGHT,
    WRONG,
    ColumnAnswer,
    answer_detail,
    gains_caption,
    history_markdown,
    mark,
    retrieved_table,
    shorten,
)
from oppu_hub.data import Question
from oppu_hub.tasks import get_task
from space_fixtures import train_adapters, write_history

pytest_plugins = ("space_fixtures",)


@pytest.fixture
def backend(space_config: SpaceConfig) -> Backend:
    return Backend(space_config)


def test_every_column_answers_with_the_model_of_its_k(backend):
    out = backend.compare("LaMP-2N", "u2", HELD_OUT, "q2", "", 2)
    assert [c.method for c in out.columns] == ["np-k0", "rag-k2", "oppu-k0", "oppu-k2"]
    assert all(c.note is None and c.seconds is not None and c.answer for c in out.columns), out.columns
    assert out.gold == "parents" and all(isinstance(c.right, bool) for c in out.columns)
    assert out.columns[2].answer != out.columns[0].answer  # the adapter changes the random base's answer
    assert len(out.retrieved) == 2 and not out.notes
    assert sorted(backend.generator("LaMP-2N").resident) == ["u2-k0", "u2-k2"]
    assert backend.base_loads == 1  # one base folder serves every variant here
    # a user without an adapter: the base columns answer, the OPPU columns say why not
    out = backend.compare("LaMP-2N", "u4", HELD_OUT, "q4", "", 0)
    assert out.columns[0].note is None and out.columns[2].note.startswith("No adapter for this user")
    assert out.columns[2].right is None and answer_detail(out.columns[2]) == "`oppu-k0` · latency: —"


def test_only_retrieval_depths_with_models_are_offered(backend, space_config, tmp_path):
    assert backend.ks("LaMP-2N") == [0, 2] and backend.default_k("LaMP-2N") == 2
    assert backend.ks("LaMP-4") == [0] and backend.default_k("LaMP-4") == 0
    with pytest.raises(SpaceError, match="no LaMP-2N models were trained with k=4 retrieved items here: choose k in "
                                         "0, 2"):
        backend.compare("LaMP-2N", "u2", HELD_OUT, "q2", "", 4)
    for k in (0, 1, 3):
        (tmp_path / "base" / "LaMP-2N" / f"k{k}").mkdir(parents=True)
    assert variant_ks(str(tmp_path / "base" / "{task}" / "{variant}"), "LaMP-2N") == {0, 1, 3}
    assert variant_ks(str(tmp_path / "base" / "{task}" / "{variant}"), "LaMP-4") is None  # nothing local
    assert variant_ks("org/oppu-base-{task}-{variant}", "LaMP-2N") is None  # a Hub id: unknown
    assert variant_ks(str(tmp_path / "one-base"), "LaMP-2N") is None  # one model for every k
    config = SpaceConfig(**{**vars(space_config), "base_dir": str(tmp_path / "base" / "{task}" / "{variant}")})
    assert Backend(config).ks("LaMP-2N") == [0]  # a base for k=0, 1, 3; adapters for k=0, 2
    assert Backend(SpaceConfig(**{**vars(space_config), "ks": [1, 0]})).ks("LaMP-2N") == [0, 1]  # as configured


def test_free_text_hides_the_gold_and_an_empty_query_is_one_message(backend):
    with pytest.raises(SpaceError, match="the free-text query is empty"):
        backend.compare("LaMP-2N", "u2", FREE_TEXT, "q2", "  ", 2)
    out = backend.compare("LaMP-2N", "u3", FREE_TEXT, "q2", "quantum story about the quantum", 2)
    assert out.gold is None and all(c.right is None for c in out.columns)
    assert all(c.off_labels == (c.answer not in get_task("LaMP-2N").labels) for c in out.columns)


def test_marks_against_the_gold_and_the_labels():
    news, headline = get_task("LaMP-2N"), get_task("LaMP-4")
    right = mark(news, ColumnAnswer("a", "A", "np-k0", "sports", "Sports.", 0.1), "sports")
    wrong = mark(news, ColumnAnswer("a", "A", "np-k0", "politics", "politics", 0.1), "sports")
    off = mark(news, ColumnAnswer("a", "A", "np-k0", "a long story", "a long story", 0.1), "sports")
    free = mark(news, ColumnAnswer("a", "A", "np-k0", "a long story", "a long story", 0.1), None)
    assert (right.right, wrong.right, off.right, free.right) == (True, False, False, None)
    assert (right.off_labels, wrong.off_labels, off.off_labels, free.off_labels) == (False, False, True, True)
    assert answer_detail(right) == f"{RIGHT} · `np-k0` · latency **0.10 s** · raw: `Sports.`"
    assert answer_detail(off).startswith(f"{WRONG} · {OFF_LABELS} · `np-k0` · latency")
    gen = mark(headline, ColumnAnswer("a", "A", "np-k0", "harbour works begin", "", 0.1), "harbour works begin soon")
    assert gen.right is None and not gen.off_labels and gen.rouge1 == pytest.approx(6 / 7)
    assert "ROUGE-1 vs gold **0.86**" in answer_detail(gen)
    unavailable = mark(news, ColumnAnswer("a", "A", "oppu-k0", note="No adapter"), "sports")
    assert unavailable.right is None and not unavailable.off_labels


def test_label_scoring_and_contrastive_decoding(backend):
    labels = get_task("LaMP-2N").labels
    out = backend.compare("LaMP-2N", "u2", HELD_OUT, "q2", "", 2, answers=LABELS, contrastive=True)
    assert out.answers == "labels" and [c.method for c in out.columns][-1] == "oppu-cd-k2"
    assert all(c.answer in labels and not c.off_labels for c in out.columns[:4])  # each label scored
    assert out.columns[4].note is None and out.columns[4].seconds is not None  # contrastive decoding generates
    out = backend.compare("LaMP-4", "w0", HELD_OUT, "h0", "", 0, answers=LABELS)
    assert out.answers == "generate" and all(c.rouge1 is not None for c in out.columns)  # no labels to score


def test_make_adapter_trains_every_setting_the_columns_need(backend, tmp_path):
    steps: list[tuple[float, str]] = []  # what the progress bar shows
    made = backend.make_adapter("LaMP-2N", str(write_history(tmp_path / "h.jsonl")), "lantern story", ANONYMOUS, 2,
                                lambda fraction, desc: steps.append((fraction, desc)))
    assert sorted(made.folders) == [0, 2] and made.user == "you" and made.repo is None
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and steps[-1] == (1.0, "done")
    training = [(f, d) for f, d in steps if "step" in d]
    assert len({f for f, _ in training}) > 4 and all(0.1 <= f <= 0.9 for f, _ in training)  # it advances
    assert any(d.startswith("training your k=0 adapter: step") for _, d in training)
    assert any(d.startswith("training your k=2 adapter: step") for _, d in training)
    assert any(d.startswith("training 2 adapters (k=0 and k=2) on 6 items x 8 epochs (") for _, d in steps)
    out = backend.compare_made(made, "lantern story about the lantern", 2)
    assert all(c.note is None for c in out.columns), [c.note for c in out.columns]  # all four columns answer
    assert out.user == "you" and all("lantern" in r.item["text"] for r in out.retrieved)
    with pytest.raises(SpaceError, match="upload your history first"):
        backend.make_adapter("LaMP-2N", None, "a query", ANONYMOUS, 0)
    with pytest.raises(SpaceError, match="type a query first"):
        backend.make_adapter("LaMP-2N", str(tmp_path / "h.jsonl"), " ", ANONYMOUS, 0)
    made.remove()
    assert not Path(made.dir).exists()


def test_the_first_query_shown_changes_with_personalization(backend, space_config, tmp_path):
    folder = tmp_path / "predictions" / "LaMP-2N"
    folder.mkdir(parents=True)
    predictions = {"np-k0": {"q2": "sports", "q3": "politics"}, "oppu-k0": {"q2": "sports", "q3": "food"}}
    for name, answers in predictions.items():
        (folder / f"{name}.json").write_text(json.dumps(
            {"task": "LaMP_2N", "golds": [{"id": i, "output": o} for i, o in answers.items()]}))
    config = SpaceConfig(**{**vars(space_config), "predictions_dir": str(tmp_path / "predictions" / "{task}")})
    assert Backend(config).default_query("LaMP-2N") == ("u3", "q3")  # read from the files: no model loaded
    probed = backend.default_query("LaMP-2N")  # no files: the first users' queries are answered here
    assert probed in {("u2", "q2"), ("u3", "q3")} and backend.base_loads == 1
    q = [Question(f"q{i}", "x", [], f"u{i}", "sports") for i in range(3)]
    task = get_task("LaMP-2N")
    answers = {"q0": ("sports", "sports"), "q1": ("sports", "food"), "q2": ("food", "sports")}
    assert pick_default(task, [(x.user_id, x) for x in q], answers) == ("u2", "q2")  # OPPU differs and is right
    assert pick_default(task, [(x.user_id, x) for x in q[:2]], answers) == ("u1", "q1")  # differs
    assert pick_default(task, [(x.user_id, x) for x in q[:1]], answers) == ("u0", "q0")
    assert pick_default(task, [], answers) is None


def test_history_items_and_labels_read_well(backend):
    news = backend.history_summary("LaMP-2N", "u2")
    assert news.counts == [("parents", 6)] and "labels: parents (6)" in history_markdown(news)
    headlines = backend.history_summary("LaMP-4", "w0")
    assert headlines.counts is None and "latest:" in history_markdown(headlines)  # no chart without labels
    out = backend.compare("LaMP-4", "w0", HELD_OUT, "h0", "", 0)
    assert len(out.retrieved) == 0
    out.retrieved = backend.compare("LaMP-2N", "u2", HELD_OUT, "q2", "", 2).retrieved
    headers, rows = retrieved_table(get_task("LaMP-2N"), out)
    assert headers == ["rank", "BM25 score", "date", "label", "item"] and rows[0][3] == "parents"
    lamp4 = get_task("LaMP-4")
    history = backend.split("LaMP-4").user_history("w0")
    out.retrieved = [type(out.retrieved[0])(item, 1.0) for item in history]
    headers, rows = retrieved_table(lamp4, out)
    assert headers == ["rank", "BM25 score", "date", "item"]  # the headline is in the item: no label column
    item = rows[0][3]
    assert item.endswith("…") and len(item) <= 240 and lamp4.history_line(history[0]).startswith(item[:-1])
    assert item[:-1].split()[-1] in " ".join(lamp4.history_line(history[0]).split()).split()  # a whole word


def test_shorten_cuts_at_a_word_boundary():
    assert shorten("short text", 20) == "short text"
    assert shorten("one two three four", 12) == "one two…"
    assert shorten("  spaced\n\nout   words here ", 100) == "spaced out words here"
    assert shorten("unbreakable" * 3, 10) == "unbreakab…"


def test_gains_caption_names_the_tasks(tmp_path):
    assert gains_caption(tmp_path / "none.png") is None
    (tmp_path / "g.png").write_bytes(b"png")
    (tmp_path / "g.json").write_text(json.dumps({"rows": [["LaMP-2M", "oppu-k0 vs np-k0", 3, 0, 0, 3],
                                                          ["LaMP-3", "oppu-k0 vs np-k0", 7, 4, 0, 3]]}))
    caption = gains_caption(tmp_path / "g.png")
    assert "It covers the tasks of that analysis: LaMP-2M (3 users), LaMP-3 (7 users)." in caption


def test_uploads_are_checked_clearly(tmp_path):
    task = get_task("LaMP-2N")
    question = {"id": QUERY_ID, "input": task.format_input(text="a query"), "user_id": "you"}

    def read(text: str, name: str = "history.json") -> list:
        (tmp_path / name).write_text(text)
        return read_history(tmp_path / name, task, question)

    items = json.loads(write_history(tmp_path / "h.json", 3, lines=False).read_text())
    assert [i["id"] for i in read(json.dumps(items[::-1]))] == ["h0", "h1", "h2"]  # put in time order
    assert len(read(json.dumps({"id": "q", "input": "x", "profile": items}))) == 3  # a LaMP question's profile
    with pytest.raises(SpaceError, match=r"history.json: question 'your query': profile item 'h1' lacks "
                                         r"\['category'\]"):
        read(json.dumps([items[0], {k: v for k, v in items[1].items() if k != "category"}]))
    with pytest.raises(SpaceError, match="duplicate profile item id 'h0'"):
        read(json.dumps([items[0], items[0]]))
    with pytest.raises(SpaceError, match="empty profile"):
        read("[]")
    with pytest.raises(SpaceError, match=r"history.jsonl, line 2: not valid JSON"):
        read(json.dumps(items[0]) + "\n{oops\n", "history.jsonl")
    with pytest.raises(SpaceError, match="history.json is not JSON"):
        read("category,text\nsports,a story")
    with pytest.raises(SpaceError, match="not a JSON str"):
        read('"a story"')


def test_two_stage_column_answers_with_the_collective_base_and_the_users_residual(space_config, space_models,
                                                                                   tiny_base, tmp_path):
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oppu_hub.inference import Generator
    from oppu_hub.models import load_base
    from oppu_hub.prompts import PromptBuilder

    data, _ = space_models
    # A stand-in for a merged collective base (its training: tests/test_two_stage.py): other weights than the base.
    collective = tmp_path / "collective" / "LaMP-2N" / "k0-collective-train"
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(collective)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(collective)
    residuals = train_adapters(data, tmp_path / "two-stage", collective, ["u2"])
    config = dataclasses.replace(space_config, two_stage_base_dir=str(tmp_path / "collective" / "{task}" /
                                                                      "{variant}-collective-train"),
                                 two_stage_adapters_dir=str(residuals / "{task}" / "{variant}-lora"))
    backend = Backend(config)
    out = backend.compare("LaMP-2N", "u2", HELD_OUT, "q2", "", 2, two_stage=True)
    column = out.columns[-1]
    assert (column.name, column.method, column.note) == ("two-stage", "two-stage-k0", None)
    # The answer is the collective base's with u2's residual adapter, on the k=0 prompt.
    t = get_task("LaMP-2N")
    gen = Generator(*load_base(str(collective)))
    name = gen.load(residuals / "LaMP-2N" / "k0-lora" / "u2")
    prompt = PromptBuilder(t, gen.tokenizer, config.max_prompt_length).build(
        backend.question("LaMP-2N", "u2", "q2").fields(t), [])
    assert column.raw == gen.generate([prompt], [name], t.max_new_tokens, 1)[0]
    assert str(collective) in backend._generators  # its own resident base beside the task-adapted one
    # Without a residual (u3), for a visitor's own adapter, or with no collective base: a note, the rest answers.
    assert "no adapter for user 'u3'" in backend.compare("LaMP-2N", "u3", HELD_OUT, "q3", "", 0,
                                                         two_stage=True).columns[-1].note
    made = backend.make_adapter("LaMP-2N", str(write_history(tmp_path / "h.jsonl")), "lantern story", ANONYMOUS, 0)
    assert "collective base" in backend.compare_made(made, "lantern story", 0, two_stage=True).columns[-1].note
    no_base = dataclasses.replace(config, two_stage_base_dir=str(tmp_path / "none" / "{task}" / "{variant}"))
    plain = Backend(no_base).compare("LaMP-2N", "u2", HELD_OUT, "q2", "", 0, two_stage=True)
    assert "no collective base" in plain.columns[-1].note and all(c.note is None for c in plain.columns[:4])
