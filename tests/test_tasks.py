"""The task registry: the paper's prompts word for word, official input round trips, robust answer parsing."""

import pytest

from oppu_hub.tasks import MOVIE_TAGS, NEWS_CATEGORIES, TASKS, UnknownTaskError, get_task

# Appendix I of the OPPU paper, as quoted in the project's issue.
PAPER_PROMPTS = {
    "LaMP-1": ("Identify the most relevant reference for the listed publication by the researcher. Select the "
               "reference paper that is most closely related to the researcher's work. Please respond with only the "
               "number that corresponds to the reference.\n\npaper title: T\n\nreference: [1] - A [2] - B\n\nanswer:",
               {"title": "T", "option1": "A", "option2": "B"}),
    "LaMP-2N": ("Which category does this article relate to among the following categories? Just answer with the "
                "category name without further explanation. categories: [travel, education, parents, style & beauty, "
                "entertainment, food & drink, science & technology, business, sports, healthy living, women, "
                "politics, crime, culture & arts, religion]\n\narticle: X category:", {"text": "X"}),
    "LaMP-2M": ("Which tag does this movie relate to among the following tags? Just answer with the tag name without "
                "further explanation. tags: [sci-fi, based on a book, comedy, action, twist ending, dystopia, dark "
                "comedy, classic, psychology, fantasy, romance, thought-provoking, social commentary, violence, true "
                "story]\n\ndescription: X tag:", {"description": "X"}),
    "LaMP-3": ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
               "without further explanation.\n\nreview: X score:", {"text": "X"}),
    "LaMP-4": ("Generate a headline for the following article.\n\narticle: X headline:", {"text": "X"}),
    "LaMP-5": ("Generate a title for the following abstract of a paper.\n\nabstract: X title:", {"abstract": "X"}),
    "LaMP-7": ("Following the given pattern, paraphrase the following text into tweet without any explanation before "
               "or after it.\n\ntext: X tweet:", {"text": "X"}),
}


@pytest.mark.parametrize("name", list(PAPER_PROMPTS))
def test_prompt_is_the_papers(name):
    expected, fields = PAPER_PROMPTS[name]
    assert get_task(name).prompt(fields) == expected


def test_registry_has_the_seven_tasks_and_label_sets():
    assert list(TASKS) == ["LaMP-1", "LaMP-2N", "LaMP-2M", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-7"]
    assert len(NEWS_CATEGORIES) == 15 and len(MOVIE_TAGS) == 15
    assert get_task("LaMP-3").labels == ("1", "2", "3", "4", "5")
    assert [t.metric_names for t in TASKS.values()] == [
        ("accuracy", "f1"), ("accuracy", "f1"), ("accuracy", "f1"), ("mae", "rmse"),
        ("rouge-1", "rouge-l"), ("rouge-1", "rouge-l"), ("rouge-1", "rouge-l")]
    assert [t.has_pairs for t in TASKS.values()] == [False, True, True, True, True, True, False]


@pytest.mark.parametrize("alias", ["LaMP-2N", "lamp_2n", "lamp2n", "LAMP 2N"])
def test_aliases(alias):
    assert get_task(alias).name == "LaMP-2N"


def test_unknown_task_names_the_known_ones():
    with pytest.raises(UnknownTaskError, match="unknown task 'LaMP-9'.*LaMP-1, LaMP-2N"):
        get_task("LaMP-9")


@pytest.mark.parametrize("name", list(TASKS))
def test_official_input_round_trips(name):
    task = get_task(name)
    fields = {k: f'value of {k} with "quotes", [brackets] and: colons' for k in task.query_fields}
    assert task.parse_input(task.format_input(**fields)) == fields


def test_parse_input_reads_a_real_lamp_record():
    # Verbatim shape of a LaMP_2 (news) dev question (../shared/data/lamp_format_sample).
    text = ("Which category does this article relate to among the following categories? Just answer with the "
            "category name without further explanation. categories: [women, religion, politics] article: Calls for "
            "presidential impeachment have cast a shadow.")
    assert get_task("LaMP-2N").parse_input(text) == {"text": "Calls for presidential impeachment have cast a shadow."}
    with pytest.raises(ValueError, match="does not follow the LaMP format"):
        get_task("LaMP-4").parse_input(text)


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("LaMP-2N", "politics", "politics"),
    ("LaMP-2N", "  Politics.\n", "politics"),
    ("LaMP-2N", "STYLE & BEAUTY", "style & beauty"),
    ("LaMP-2N", "style &amp; beauty", "style & beauty"),
    ("LaMP-2N", "The category is: food & drink. It is about cooking", "food & drink"),
    ("LaMP-2N", '"crime"', "crime"),
    ("LaMP-2N", "nothing relevant", None),
    ("LaMP-2N", "", None),
    ("LaMP-2M", "dark comedy", "dark comedy"),  # not "comedy": the longer label wins at the same position
    ("LaMP-2M", "Sci-Fi!", "sci-fi"),
    ("LaMP-2M", "thought-provoking and classic", "thought-provoking"),
    ("LaMP-1", "[1]", "[1]"),
    ("LaMP-1", "2", "[2]"),
    ("LaMP-1", " [2] - the second one", "[2]"),
    ("LaMP-1", "neither", None),
    ("LaMP-3", "4", "4"),
    ("LaMP-3", "Score: 5 stars", "5"),
    ("LaMP-3", "five", None),
    ("LaMP-4", '  "A Headline"\nsecond line', "A Headline"),
])
def test_parse_output(name, text, expected):
    assert get_task(name).parse_output(text) == expected


def test_history_rendering():
    task = get_task("LaMP-3")
    item = {"id": "1", "text": "Great  cream,\nworks", "score": "5", "date": "2020-01-01"}
    assert task.item_fields(item) == {"text": "Great cream, works", "score": "5"}
    assert task.history_line(item) == '5 is the score for "Great cream, works"'
    assert task.item_answer(item) == "5"
    with pytest.raises(KeyError, match="lacks \\['score'\\]"):
        task.item_fields({"id": "2", "text": "x"})
    with pytest.raises(ValueError, match="not query/answer pairs"):
        get_task("LaMP-7").item_answer({"id": "1", "text": "a tweet"})
