"""Reading, validating and writing LaMP-format files."""

import json

import pytest

from oppu_hub.data import (
    LampDataError,
    LampSplit,
    Question,
    chronological,
    load_split,
    load_task_split,
    read_predictions,
    write_predictions,
    write_split,
)
from oppu_hub.tasks import get_task

TASK = get_task("LaMP-3")


def question(qid="q1", user="u1", n=3, **extra):
    profile = [{"id": f"{qid}-{i}", "text": f"review {i}", "score": str(1 + i % 5), "date": f"2020-0{i + 1}-01"}
               for i in range(n)]
    return {"id": qid, "input": TASK.format_input(text="a great product"), "profile": profile, "user_id": user, **extra}


def write(tmp_path, questions, golds=None, task="LaMP_3"):
    q = tmp_path / "dev_questions.json"
    q.write_text(json.dumps(questions))
    if golds is None:
        return q, None
    o = tmp_path / "dev_outputs.json"
    o.write_text(json.dumps({"task": task, "golds": golds}))
    return q, o


def test_loads_questions_golds_and_groups_users(tmp_path):
    qs = [question("q1", "u1"), question("q2", "u1", n=4), question("q3", "u2")]
    q, o = write(tmp_path, qs, [{"id": i, "output": "4"} for i in ("q1", "q2", "q3")])
    split = load_split(q, o)
    assert split.task.name == "LaMP-3" and split.has_golds
    assert split.user_ids == ["u1", "u2"]
    assert [x.id for x in split.user_questions("u1")] == ["q1", "q2"]
    assert [i["id"] for i in split.user_history("u1")] == ["q1-0", "q1-1", "q1-2"]  # the earliest query's profile
    ds = split.to_dataset()
    assert ds.num_rows == 3 and ds[0]["output"] == "4" and json.loads(ds[0]["profile"])[0]["id"] == "q1-0"
    with pytest.raises(KeyError, match="user 'nobody' is not in LaMP-3"):
        split.user_questions("nobody")


def test_user_id_defaults_to_question_id(tmp_path):
    raw = question()
    del raw["user_id"]
    q, _ = write(tmp_path, [raw])
    assert load_split(q, task="LaMP-3").user_ids == ["q1"]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda qs: qs[0].pop("input"), r"question \[0\] \(id 'q1'\) lacks \['input'\]"),
    (lambda qs: qs[0]["profile"].clear(), "question 'q1': empty profile"),
    (lambda qs: qs[0]["profile"][1].pop("score"), r"profile item 'q1-1' lacks \['score'\]"),
    (lambda qs: qs.append(dict(qs[0])), r"duplicate question ids \['q1'\]"),
    (lambda qs: qs[0]["profile"].append(dict(qs[0]["profile"][0])), "duplicate profile item id 'q1-0'"),
    (lambda qs: qs[0].update(input="Generate a headline for the following article: x"), "does not follow"),
    (lambda qs: qs[0].update(profile="nope"), "'profile' must be a list"),
    (lambda qs: qs[0]["profile"][1].update(score="nan"), "profile item 'q1-1' has score 'nan', not a rating"),
    (lambda qs: qs[1]["profile"][0].update(score=7), "question 'q2': profile item 'q2-0' has score 7, not a rating"),
    (lambda qs: qs[0].update(user_id=""), "question 'q1': empty user_id"),  # not silently the question id
    (lambda qs: qs[0].update(user_id=None), "question 'q1': empty user_id"),
])
def test_bad_questions_fail_naming_file_and_item(tmp_path, mutate, message):
    qs = [question("q1"), question("q2")]
    mutate(qs)
    q, _ = write(tmp_path, qs)
    with pytest.raises(LampDataError, match=message) as err:
        load_split(q, task="LaMP-3")
    assert "dev_questions.json" in str(err.value)


def test_malformed_json_names_file_and_position(tmp_path):
    q = tmp_path / "dev_questions.json"
    q.write_text('[{"id": "q1",]')
    with pytest.raises(LampDataError, match=r"dev_questions.json: malformed JSON at line 1 column"):
        load_split(q, task="LaMP-3")


def test_questions_without_golds(tmp_path):
    q, o = write(tmp_path, [question("q1"), question("q2")], [{"id": "q1", "output": "3"}])
    with pytest.raises(LampDataError, match=r"dev_outputs.json: no gold output for questions \['q2'\]"):
        load_split(q, o)


@pytest.mark.parametrize("gold", ["nan", "inf", "-Infinity", "0", "5.5", "four"])
def test_rating_golds_are_finite_and_within_the_scale(tmp_path, gold):
    golds = [{"id": "q1", "output": "1"}, {"id": "q2", "output": gold}]
    q, o = write(tmp_path, [question("q1"), question("q2")], golds)
    with pytest.raises(LampDataError, match=f"dev_outputs.json: gold '{gold}' of question 'q2' is not a rating from 1"):
        load_split(q, o)
    q, o = write(tmp_path, [question("q1")], [{"id": "q1", "output": "4.5"}])
    assert load_split(q, o).questions[0].gold == "4.5"


def test_wrong_task(tmp_path):
    q, o = write(tmp_path, [question("q1")], [{"id": "q1", "output": "3"}], task="LaMP_4")
    with pytest.raises(LampDataError, match="task 'LaMP_4' does not match LaMP-3"):
        load_split(q, o, task="LaMP-3")
    with pytest.raises(LampDataError, match="lacks"):  # LaMP-4 items need text and title
        load_split(q, o)


def test_lamp2_is_told_apart_by_profile_keys(tmp_path):
    news = get_task("LaMP-2N")
    raw = [{"id": "1", "input": news.format_input(text="x"), "profile": [
        {"id": "a", "text": "t", "title": "h", "category": "politics"}]}]
    q, o = write(tmp_path, raw, [{"id": "1", "output": "politics"}], task="LaMP_2")
    assert load_split(q, o).task.name == "LaMP-2N"


NEWS_ITEM = {"id": "a", "text": "t", "title": "h", "category": "politics"}
MOVIE_ITEM = {"id": "a", "description": "d", "tag": "comedy"}


@pytest.mark.parametrize(("task", "item", "answer"), [("LaMP-2N", NEWS_ITEM, "politics"),
                                                      ("LaMP-2M", MOVIE_ITEM, "comedy")])
def test_lamp2_files_name_their_label_set_and_old_names_still_read(tmp_path, task, item, answer):
    t = get_task(task)
    written = write_split(LampSplit(t, [Question("1", t.format_input(text="x", description="x"), [item], "u1",
                                                 answer)]), tmp_path, "dev")
    assert json.loads(written[1].read_text())["task"] == task.replace("-", "_")  # LaMP_2N / LaMP_2M, not LaMP_2
    assert load_split(*written).task is t
    for name in ("LaMP_2", task, task.replace("-", "_")):  # LaMP's own / older files, and the canonical name
        q, o = write(tmp_path, json.loads(written[0].read_text()), [{"id": "1", "output": answer}], task=name)
        assert load_split(q, o).task is t
        assert load_split(q, o, task=task).questions[0].gold == answer
    other = "LaMP_2M" if task == "LaMP-2N" else "LaMP_2N"
    q, o = write(tmp_path, json.loads(written[0].read_text()), [{"id": "1", "output": answer}], task=other)
    with pytest.raises(LampDataError, match=f"task '{other}' does not match {task}"):
        load_split(q, o, task=task)


def test_predictions_round_trip_in_the_gold_shape(tmp_path):
    path = write_predictions(TASK, {"q1": "4", "q2": "1"}, tmp_path / "preds.json")
    assert json.loads(path.read_text()) == {"task": "LaMP_3", "golds": [{"id": "q1", "output": "4"},
                                                                        {"id": "q2", "output": "1"}]}
    assert read_predictions(path) == {"q1": "4", "q2": "1"}


def test_chronological_sorts_by_date_only_when_all_items_have_one():
    items = [{"id": "b", "date": "2020-02-01"}, {"id": "a", "date": "2020-01-01"}]
    assert [i["id"] for i in chronological(items)] == ["a", "b"]
    assert [i["id"] for i in chronological([*items, {"id": "c"}])] == ["b", "a", "c"]


def test_load_task_split_points_at_the_builder(tmp_path):
    with pytest.raises(FileNotFoundError, match="oppu-hub data build"):
        load_task_split(tmp_path, "LaMP-3", "dev")
    with pytest.raises(ValueError, match="unknown split"):
        load_task_split(tmp_path, "LaMP-3", "validation")
