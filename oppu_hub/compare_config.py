"""The settings of the comparison app (``oppu-hub space``, the Space's ``app.py``) and the small types and helpers
its library (:mod:`oppu_hub.compare` and its ``compare_*`` modules) and page share: the visitor, the error shown to
them, a typed query as a task's fields, the retrieval depths found on disk. Torch- and gradio-free, so ``oppu-hub``
reads :class:`SpaceConfig` for its flags cheaply."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .tasks import Task, UnknownTaskError, get_task

HELD_OUT = "held-out query"
FREE_TEXT = "free text"
GENERATE = "generate"
LABELS = "score the labels"
ANSWER_MODES = {GENERATE: "generate", LABELS: "labels"}  # the page's choice -> DecodingOptions.answers
MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # the token of gradio's sign-in outside a Space
LOCAL_VISITOR = "you"  # the user id of an adapter made where nobody signs in
QUERY_ID = "your query"


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def _env_ints(name: str) -> list[int] | None:
    value = os.environ.get(name)
    return [int(v) for v in value.replace(",", " ").split()] if value else None


@dataclass
class SpaceConfig:
    """The comparison app's inputs. ``{task}`` in a path is replaced by the chosen task's name.

    Args:
        data_dir: LaMP-format data (``{data_dir}/{task}/{split}_questions.json``).
        base_dir: the task-adapted base (folder or Hub id); ``{variant}`` is the column's prompt variant (``k0``,
            ``k1``...), so each column gets the base trained with its prompts.
        adapters_dir: a folder of users' adapters (``train-users`` output, ``{variant}`` as above) or a store spec
            (``hub:NAMESPACE``: one adapter per user and task, used by the column its ``oppu.json`` k matches).
        task: the task shown first; tasks with data (and, for a folder, adapters) are offered.
        split: whose users and held-out queries are shown.
        k: the retrieval depth shown first (when it is offered).
        ks: the retrieval depths offered; default: those whose bases and adapters are found in the ``{variant}``
            folders (a Hub base or store cannot be listed: then 0 and ``k``).
        two_stage_base_dir / two_stage_adapters_dir: the optional two-stage column's collective base (a LoRA on the
            training users' histories merged into the k=0 base: ``oppu-hub train-collective``) and the users'
            adapters trained on it (folders, ``{task}``/``{variant}`` as above; ``make demo`` links both).
        predictions_dir: prediction files of ``np-k0`` and ``oppu-k0`` (``oppu-hub eval`` / ``make demo``) from
            which the first query shown is chosen: the first where the user's adapter changes the base's answer.
            Without them a few users' queries are answered at start-up (``probe_users``).
        probe_users: users whose held-out queries are answered at start-up to find that query.
        gains_plot: the leaderboard's per-user gains plot (``oppu-hub analyze user-gains``), shown with the tasks
            of the ``.json`` beside it when it exists.
        max_items: a visitor's adapter is trained on at most this many of their newest history items.
        train_epochs / train_learning_rate: of a visitor's adapter (default: the task's tuned user-adapter
            settings, :func:`oppu_hub.tuned.user_settings`).
        max_queue: visitors waiting at most (one training runs at a time; the others see their position).
        host / port: where to serve.
    """

    data_dir: str = field(default_factory=lambda: os.environ.get("OPPU_HUB_DATA", "runs/demo/data"),
                          metadata={"help": "LaMP-format data folder (env OPPU_HUB_DATA)"})
    base_dir: str = field(default_factory=lambda: os.environ.get("OPPU_HUB_BASE",
                                                                 "runs/demo/space/base/{task}/{variant}"),
                          metadata={"help": "base model folder or Hub id; {task} and {variant} (k0, k1...) are "
                                            "replaced (env OPPU_HUB_BASE)"})
    adapters_dir: str = field(
        default_factory=lambda: os.environ.get("OPPU_HUB_STORE", "runs/demo/space/users/{task}/{variant}-lora"),
        metadata={"help": "users' adapters folder ({task} and {variant} are replaced) or a store spec "
                          "hub:NAMESPACE (env OPPU_HUB_STORE)"})
    two_stage_base_dir: str = field(
        default_factory=lambda: os.environ.get("OPPU_HUB_TWO_STAGE_BASE",
                                               "runs/demo/space/base/{task}/{variant}-collective-train"),
        metadata={"help": "the two-stage column's collective base folder (env OPPU_HUB_TWO_STAGE_BASE)"})
    two_stage_adapters_dir: str = field(
        default_factory=lambda: os.environ.get("OPPU_HUB_TWO_STAGE_ADAPTERS",
                                               "runs/demo/space/users/{task}/{variant}-two-stage-lora"),
        metadata={"help": "users' adapters trained on that base, a folder (env OPPU_HUB_TWO_STAGE_ADAPTERS)"})
    task: str = field(default_factory=lambda: os.environ.get("OPPU_HUB_TASK", "LaMP-2N"),
                      metadata={"help": "task shown first (env OPPU_HUB_TASK)"})
    split: str = field(default="test", metadata={"help": "split whose users and queries are shown"})
    k: int = field(default=0, metadata={"help": "retrieval depth shown first"})
    ks: list[int] | None = field(default_factory=lambda: _env_ints("OPPU_HUB_KS"), metadata={
        "help": "retrieval depths offered (default: those with a base and adapters in the {variant} folders; "
                "env OPPU_HUB_KS, e.g. 0,1)"})
    predictions_dir: str = field(
        default_factory=lambda: os.environ.get("OPPU_HUB_PREDICTIONS", "runs/demo/results/predictions/{task}"),
        metadata={"help": "np-k0.json / oppu-k0.json prediction files the first query shown is chosen from "
                          "(env OPPU_HUB_PREDICTIONS)"})
    probe_users: int = field(default=3, metadata={
        "help": "without prediction files, users whose queries are answered at start-up to choose it"})
    gains_plot: str = field(
        default_factory=lambda: os.environ.get("OPPU_HUB_GAINS", "bench/results/analyses/user-gains.png"),
        metadata={"help": "the leaderboard's per-user gains plot to show, if it exists (env OPPU_HUB_GAINS)"})
    max_adapters: int = field(default=8, metadata={"help": "resident adapters at most (LRU)"})
    max_prompt_length: int = field(default=384, metadata={"help": "token budget of one prompt"})
    max_items: int = field(default_factory=lambda: int(os.environ.get("OPPU_HUB_MAX_ITEMS", 32)), metadata={
        "help": "newest history items a visitor's adapter trains on (env OPPU_HUB_MAX_ITEMS)"})
    train_epochs: float | None = field(default_factory=lambda: _env_float("OPPU_HUB_TRAIN_EPOCHS"), metadata={
        "help": "epochs of a visitor's adapter; default the task's tuned default (env OPPU_HUB_TRAIN_EPOCHS)"})
    train_learning_rate: float | None = field(default_factory=lambda: _env_float("OPPU_HUB_TRAIN_LR"), metadata={
        "help": "learning rate of a visitor's adapter; default the task's tuned default (env OPPU_HUB_TRAIN_LR)"})
    max_queue: int = field(default_factory=lambda: int(os.environ.get("OPPU_HUB_MAX_QUEUE", 8)), metadata={
        "help": "visitors waiting in the queue at most (env OPPU_HUB_MAX_QUEUE)"})
    host: str = field(default_factory=lambda: os.environ.get("OPPU_HUB_HOST")
                      or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                      metadata={"help": "address to serve on (0.0.0.0 on a Space)"})
    port: int = field(default_factory=lambda: int(os.environ.get("PORT", os.environ.get("GRADIO_SERVER_PORT", 7860))),
                      metadata={"help": "port to serve on"})

    def fill(self, template: str, task: str, k: int) -> str:
        """``template`` (a base or adapters path) for ``task`` and the prompts of ``k`` retrieved items."""
        return template.replace("{task}", task).replace("{variant}", f"k{k}")


class SpaceError(ValueError):
    """A problem the visitor can fix, or must be told about (shown in the page, never as a traceback)."""


@dataclass(frozen=True)
class Visitor:
    """Who asks: a visitor signed in with Hugging Face (their own token and Hub user name), or anonymous."""

    token: str | None = None
    name: str | None = None


ANONYMOUS = Visitor()


def task_of(name: str) -> Task:
    """The task named ``name``, or a :class:`SpaceError` for the visitor."""
    if not name:
        raise SpaceError("choose a task")
    try:
        return get_task(name)
    except UnknownTaskError as e:
        raise SpaceError(str(e)) from e


def free_text_fields(task: Task, text: str | None) -> dict[str, str]:
    """A typed query as the task's fields: an official LaMP input, or the text as the query's main field."""
    text = (text or "").strip()
    if not text:
        raise SpaceError("the free-text query is empty: type an article/query, or pick a held-out query")
    try:
        return task.parse_input(text)
    except ValueError:
        fields = {f: "" for f in task.query_fields}
        fields[task.query_fields[0]] = text
        return fields


def variant_ks(template: str, task: str) -> set[int] | None:
    """The k of the ``k{N}`` variants of a ``{variant}`` path template that exist as folders here; ``None`` when
    that cannot be known: no ``{variant}`` (one model serves every k) or nothing local (a Hub id)."""
    if "{variant}" not in template:
        return None
    pattern = template.replace("{task}", task)
    found = re.compile(re.escape(pattern).replace(re.escape("{variant}"), r"k(\d+)"))
    ks = {int(m.group(1)) for p in glob.glob(glob.escape(pattern).replace("{variant}", "k*"))
          if Path(p).is_dir() and (m := found.fullmatch(p))}
    if not ks and not Path(pattern.split("{variant}")[0]).exists():
        return None
    return ks


__all__ = ["ANONYMOUS", "ANSWER_MODES", "FREE_TEXT", "GENERATE", "HELD_OUT", "LABELS", "LOCAL_VISITOR",
           "MOCK_OAUTH_TOKEN", "QUERY_ID", "SpaceConfig", "SpaceError", "Visitor", "free_text_fields", "task_of",
           "variant_ks"]
