"""A visitor's own adapter in the Space (*Make my adapter*): their uploaded history, checked as LaMP data is, trained
into one adapter per setting the comparison's columns need (k=0 for the OPPU column and the chosen k for OPPU +
retrieval) with ``train_users`` and the task's tuned settings (:func:`oppu_hub.tuned.user_settings`), its
progress reported step by step; pushed to the visitor's private repo when they are signed in. Gradio-free."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers import UserAdapterConfig, train_users
from trainers.common import watch_steps

from .compare_config import LOCAL_VISITOR, QUERY_ID, SpaceConfig, SpaceError, Visitor, free_text_fields
from .compare_view import count, duration
from .data import LampDataError, Question, chronological, newest_items, parse_question
from .io import private_dir, write_json
from .prompts import PromptBuilder, history_examples
from .tasks import Task
from .tuned import user_settings

if TYPE_CHECKING:
    from .compare import Backend

Progress = Callable[[float, str], None]  # (fraction done, what is happening)
# Trained tokens/s of LoRA training on the 135M default base on 2 CPU cores, a shared and an idle machine
# (docs/performance.md), and the tokens of a LaMP-2N history item's training row there (3,139 for 32 items).
TRAIN_TOKENS_PER_S = (40, 150)
DEFAULT_BASE_PARAMS = 134.5e6
ITEM_TOKENS = 100


@dataclass
class MadeAdapter:
    """A visitor's adapters, one per k they were trained for (``folders``), in a folder of the Space's (``dir``:
    their upload, data and weights, removed with the session), and the repo the k=0 one was pushed to."""

    id: str
    dir: str
    task: str
    user: str
    history: list[dict[str, Any]]
    items: int  # uploaded (``history`` holds the newest ``max_items`` of them)
    folders: dict[int, str] = field(default_factory=dict)
    epochs: float = 0.0
    seconds: float = 0.0
    repo: str | None = None
    url: str | None = None

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _json_line(line: str, number: int, name: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise SpaceError(f"{name}, line {number}: not valid JSON ({e})") from e


def read_history(path: str | Path, task: Task, question: dict[str, Any]) -> list[dict[str, Any]]:
    """The history items of a visitor's upload, in time order: a JSON list of LaMP profile items (or a LaMP question
    with its ``profile``) or JSON Lines of items, checked as a LaMP question's profile is (:mod:`oppu_hub.data`)
    when it is the profile of ``question``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f"cannot read {path.name}: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if not text.lstrip().startswith("{"):
            raise SpaceError(f"{path.name} is not JSON ({e}): upload a JSON list of history items or JSON Lines") from e
        data = [_json_line(line, n, path.name) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if isinstance(data, dict) and "profile" in data:
        data = data["profile"]
    if not isinstance(data, list):
        raise SpaceError(f"{path.name}: expected a list of {task.name} history items (a LaMP profile), or one item "
                         f"per line, not a JSON {type(data).__name__}")
    try:
        return chronological(parse_question({**question, "profile": data}, 0, task, Path(path.name), True).profile)
    except LampDataError as e:
        raise SpaceError(str(e)) from e


def training_time(tokens: float, params: float = DEFAULT_BASE_PARAMS) -> str:
    """A guess of how long training ``tokens`` (epochs included) takes on a base of ``params`` parameters on this
    kind of CPU (:data:`TRAIN_TOKENS_PER_S`, scaled by the parameter count)."""
    slow, fast = (tokens * params / DEFAULT_BASE_PARAMS / rate for rate in TRAIN_TOKENS_PER_S)
    return f"about {duration(fast)} to {duration(slow)}"


def expected_time(config: SpaceConfig, task: str, k: int) -> str:
    """What the page promises before a training starts: ``max_items`` items, the task's epochs, one adapter per
    setting the columns of ``k`` need (the estimate from the visitor's own tokens comes when training starts)."""
    epochs = user_settings(task, num_train_epochs=config.train_epochs)["num_train_epochs"]
    adapters = len({0, k})
    return (f"{count(config.max_items, 'item')} x {count(epochs, 'epoch')} x {count(adapters, 'adapter')} take "
            f"{training_time(config.max_items * epochs * adapters * ITEM_TOKENS)} with the default 135M base")


def sample_history(task: Task, history: list[dict[str, Any]], question: Question, max_items: int, folder: Path
                   ) -> tuple[Path, str]:
    """A file of ``history``'s newest ``max_items`` items (a LaMP profile, as a visitor uploads it) in ``folder``,
    and the text of ``question``: something to try *Make my adapter* with."""
    path = folder / f"{task.name}-sample-history.json"
    if not path.is_file():
        write_json(path, newest_items(history, max_items))
    return path, task.query_text(question.fields(task))


def make_adapter(backend: Backend, task: Task, upload: str | None, query: str | None, visitor: Visitor, k: int,
                 progress: Progress) -> MadeAdapter:
    """Train ``visitor``'s adapters for ``task`` on their uploaded history (its newest ``max_items`` items) for k=0
    and ``k`` (each column then has its adapter), each into a folder of its own; push the k=0 one to their private
    repo when they are signed in (a store holds one adapter per user and task)."""
    if not upload:
        raise SpaceError("upload your history first: a JSON list of LaMP profile items, or JSON Lines")
    if not (query or "").strip():
        raise SpaceError("type a query first: the comparison after training answers it")
    user = visitor.name or LOCAL_VISITOR
    fields = free_text_fields(task, query)
    progress(0.02, "checking your history")
    question = {"id": QUERY_ID, "input": task.format_input(**fields), "user_id": user}
    items = read_history(upload, task, question)
    made_id = uuid.uuid4().hex
    made = MadeAdapter(made_id, str(private_dir(backend.work / "made" / made_id)), task.name, user,
                       newest_items(items, backend.config.max_items), len(items))
    try:
        _train(backend, task, made, question, sorted({0, k}), progress)
        if visitor.name is not None:
            progress(0.95, "pushing to your private repo")
            pushed = backend.own_store(visitor).push(made.folders[0])
            made.repo, made.url = pushed.repo_id, pushed.url
    except BaseException:
        made.remove()  # the visitor's upload leaves with a failed training
        raise
    progress(1.0, "done")
    return made


def _train(backend: Backend, task: Task, made: MadeAdapter, question: dict[str, Any], ks: list[int],
           progress: Progress) -> None:
    """Train ``made``'s adapter for each k of ``ks``; training spans 10%-90% of the progress, step by step."""
    config = backend.config
    folder = Path(made.dir)
    write_json(folder / "data" / task.name / f"{config.split}_questions.json", [{**question, "profile": made.history}])
    settings = user_settings(task.name, num_train_epochs=config.train_epochs, learning_rate=config.train_learning_rate)
    runs = [UserAdapterConfig(
        task=task.name, data_dir=str(folder / "data"), split=config.split, base_dir=config.fill(config.base_dir,
                                                                                                task.name, k),
        k=k, output_dir=str(folder / "adapters"), users=[made.user], max_prompt_length=config.max_prompt_length,
        **settings) for k in ks]
    progress(0.05, "loading the base")
    generator = backend.generator(task.name, 0)
    tokens = 0
    for run in runs:
        builder = PromptBuilder(task, generator.tokenizer, run.max_prompt_length)
        rows = history_examples(builder, made.history, run.k)
        tokens += sum(len(generator.tokenizer(r.get("text") or r["prompt"] + r["completion"]).input_ids) for r in rows)
    epochs = settings["num_train_epochs"]
    settings_text = " and ".join(f"k={run.k}" for run in runs)
    progress(0.1, f"training {count(len(runs), 'adapter')} ({settings_text}) on {count(len(made.history), 'item')} x "
                  f"{count(epochs, 'epoch')} ({tokens} tokens): "
                  f"{training_time(tokens * epochs, generator.base.num_parameters())}")
    start = time.perf_counter()
    span = 0.8 / len(runs)
    for i, run in enumerate(runs):
        def on_step(done: int, total: int, low: float = 0.1 + i * span, k: int = run.k) -> None:
            if total:
                progress(low + span * min(done, total) / total, f"training your k={k} adapter: step {done}/{total}")

        try:
            with watch_steps(on_step):
                report = train_users(run)
        except (OSError, ValueError, RuntimeError) as e:
            raise SpaceError(f"cannot train your adapter: {e}") from e
        if made.user in report.failed:
            raise SpaceError(f"training your adapter failed: {report.failed[made.user]}")
        made.folders[run.k] = str(run.adapter_folder(made.user))
    made.epochs, made.seconds = epochs, time.perf_counter() - start


__all__ = ["MadeAdapter", "expected_time", "make_adapter", "read_history", "sample_history", "training_time"]
