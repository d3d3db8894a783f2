"""Decoding options end to end on the tiny model: contrastive decoding through the Generator's mixed batch,
label-scored answers and the calibrated prior through ``predict``, and the new eval methods."""

import json
from pathlib import Path

import pytest
import torch

from conftest import make_lamp2n, make_random_adapter
from oppu_hub.cli import main
from oppu_hub.data import load_task_split
from oppu_hub.decoding import contrast
from oppu_hub.inference import Generator, PredictConfig, build_prompts, predict
from oppu_hub.io import safe_name
from oppu_hub.label_scoring import best_labels
from oppu_hub.models import load_base
from oppu_hub.tasks import get_task

PROMPTS = ["article: harbor story category:", "a much longer prompt about glaciers and the cold tundra:"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lamp2n(tmp_path_factory.mktemp("data"), {"train": 3, "dev": 1, "test": 2})


@pytest.fixture(scope="module")
def adapters(tiny_base, data, tmp_path_factory):
    """A random adapter per test user, under the name predict looks for."""
    root = tmp_path_factory.mktemp("adapters")
    users = load_task_split(data, "LaMP-2N", "test").user_ids
    for i, user in enumerate(users):
        make_random_adapter(tiny_base, root / safe_name(user), seed=i + 1, user_id=user)
    return root


def test_contrastive_decoding_with_alpha_zero_is_plain_decoding_and_alpha_changes_it(tiny_base, tmp_path):
    gen = Generator(*load_base(str(tiny_base)))
    names = [gen.load(make_random_adapter(tiny_base, tmp_path / f"u{i}", seed=i, user_id=f"u{i}")) for i in (1, 2)]
    plain = gen.generate(PROMPTS, names, max_new_tokens=6)
    assert gen.generate(PROMPTS, names, max_new_tokens=6, contrast=(0.0, 0.0)) == plain
    # By hand, one step: the first token of the contrasted pair is contrast()'s argmax of adapter and base logits.
    tok, model = gen.tokenizer, gen.model
    batch = tok(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        user = model(**batch, adapter_names=[names[0]]).logits[:, -1]
        base = model(**batch, adapter_names=["__base__"]).logits[:, -1]
    first = tok.decode(contrast(user, base, alpha=3.0, beta=0.0).argmax(-1)).strip()
    contrasted = gen.generate(PROMPTS[:1], names[:1], max_new_tokens=1, contrast=(3.0, 0.0))[0]
    assert contrasted == first


def test_label_answers_are_the_argmax_of_the_label_scores(tiny_base, data, adapters):
    task = get_task("LaMP-2N")
    config = PredictConfig(task="LaMP-2N", data_dir=str(data), base_dir=str(tiny_base),
                           adapters_dir=str(adapters), answers="labels", max_prompt_length=128)
    gen = Generator(*load_base(str(tiny_base)))
    predictions = predict(config, gen)
    assert set(predictions.values()) <= set(task.labels)  # never outside the label set
    split = load_task_split(data, task, "test")
    ids, owners, prompts = build_prompts(config, split, split.user_ids, gen.tokenizer)
    names = [gen.load(adapters / safe_name(u)) for u in owners]
    by_hand = best_labels(gen.score_labels(prompts, names, task.labels), task.labels)
    assert [predictions[i] for i in ids] == by_hand
    # A prior of overwhelming weight answers each user's history label (each synthetic user has one label).
    prior = predict(PredictConfig(**{**config.__dict__, "prior": True, "prior_weight": 1000.0}), gen)
    assert [prior[i] for i in ids] == [q.gold for q in split.questions if q.id in ids]


def test_bad_decoding_requests_are_refused(data):
    with pytest.raises(ValueError, match="LaMP-4 has none"):
        PredictConfig(task="LaMP-4", prior=True)
    with pytest.raises(ValueError, match="give --adapters_dir"):
        PredictConfig(task="LaMP-4", contrastive=True)


def test_eval_runs_the_new_methods(tiny_base, data, tmp_path):
    work = tmp_path / "work"
    assert main(["eval", "--data_dir", str(data), "--workdir", str(work), "--base.base_model", str(tiny_base),
                 "--tasks", "LaMP-2N", "--methods", "np-k0", "prior-np-k0", "oppu-k0", "oppu-prior-k0",
                 "oppu-cd-k0", "--users", "2", "--base.max_examples", "4", "--user.max_history", "3",
                 "--user.num_train_epochs", "1", "--precision", "fp32", "--max_prompt_length", "128",
                 "--resamples", "20", "--answers", "labels"]) == 0
    table = json.loads((work / "results" / "leaderboard.json").read_text())
    assert [c["method"] for c in table["columns"]] == ["np-k0", "prior-np-k0", "oppu-k0", "oppu-cd-k0",
                                                       "oppu-prior-k0"]
    labels = set(get_task("LaMP-2N").labels)
    for row in table["meta"]["results"]:
        answers = json.loads(Path(row["predictions"]).read_text())["golds"]
        if row["method"] != "oppu-cd-k0":  # label-scored: always a label
            assert {a["output"] for a in answers} <= labels, row["method"]
