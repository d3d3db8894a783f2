"""OPPU Hub Space: compare a shared base with and without a user's adapter and retrieval, side by side.

Pick a task, a user who has an adapter, and one of their held-out queries (gold shown) or free text; the four
columns are the non-personalized base, base + BM25 retrieval (k), base + the user's adapter (OPPU) and OPPU +
retrieval, each with its latency. As in the paper (and ``oppu-hub eval``), each column uses a base and adapters
trained with that column's prompts: ``{variant}`` in the base and adapter paths is ``k0`` for the first and third
column and ``k{k}`` for the others; a column whose model was trained another way says so instead of answering.
At most two bases (k=0 and k) stay in memory; adapters are loaded on demand into each ``Generator``'s LRU (keyed
on the adapter's content, so a retrained or newly pushed adapter replaces the old one), so switching users never
reloads a base.

Run locally with ``make space`` / ``oppu-hub space`` (or ``python space/app.py``); deploy as a Hugging Face
Space with ``OPPU_HUB_STORE=hub:NAMESPACE`` (see README.md). Heavy imports (torch, gradio) are done lazily so
``oppu-hub`` can read :class:`SpaceConfig` for its flags cheaply.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STORE_PREFIXES = ("hub:", "hf:", "hf://", "local:", "file://")
HELD_OUT = "held-out query"
FREE_TEXT = "free text"
METHODS = ("non-personalized", "RAG", "OPPU", "OPPU + RAG")


@dataclass
class SpaceConfig:
    """The Space's inputs. ``{task}`` in a path is replaced by the chosen task's name.

    Args:
        data_dir: LaMP-format data (``{data_dir}/{task}/{split}_questions.json``).
        base_dir: the task-adapted base (folder or Hub id); ``{variant}`` is the column's prompt variant (``k0``,
            ``k1``...), so each column gets the base trained with its prompts.
        adapters_dir: a folder of users' adapters (``train-users`` output, ``{variant}`` as above) or a store spec
            (``hub:NAMESPACE``: one adapter per user and task, used by the column its ``oppu.json`` k matches).
        task: the task shown first; tasks with data (and, for a folder, adapters) are offered.
        split: whose users and held-out queries are shown.
        k: default retrieval depth.
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
    task: str = field(default_factory=lambda: os.environ.get("OPPU_HUB_TASK", "LaMP-2N"),
                      metadata={"help": "task shown first (env OPPU_HUB_TASK)"})
    split: str = field(default="test", metadata={"help": "split whose users and queries are shown"})
    k: int = field(default=1, metadata={"help": "default retrieval depth"})
    max_adapters: int = field(default=8, metadata={"help": "resident adapters at most (LRU)"})
    max_prompt_length: int = field(default=384, metadata={"help": "token budget of one prompt"})
    host: str = field(default_factory=lambda: os.environ.get("OPPU_HUB_HOST")
                      or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                      metadata={"help": "address to serve on (0.0.0.0 on a Space)"})
    port: int = field(default_factory=lambda: int(os.environ.get("PORT", os.environ.get("GRADIO_SERVER_PORT", 7860))),
                      metadata={"help": "port to serve on"})


class SpaceError(ValueError):
    """A problem the user can fix (shown in the UI, never as a traceback)."""


def _is_store(spec: str) -> bool:
    return spec.startswith(STORE_PREFIXES) or spec in ("hub", "hf")


def _fill(template: str, task: str, k: int) -> str:
    return template.replace("{task}", task).replace("{variant}", f"k{k}")


class Backend:
    """Data, adapters and the one resident base behind the UI (usable without Gradio)."""

    def __init__(self, config: SpaceConfig) -> None:
        self.config = config
        self._splits: dict[str, Any] = {}
        self._generators: OrderedDict[str, Any] = OrderedDict()  # base path -> Generator (k=0 and k)
        self._store: Any = None
        self._lock = threading.Lock()
        self.base_loads = 0

    # --- what can be shown ----------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        from oppu_hub.tasks import TASKS

        found = [t for t in TASKS if (Path(self.config.data_dir) / t / f"{self.config.split}_questions.json").is_file()
                 and (_is_store(self.config.adapters_dir) or self._adapters_root(t).is_dir())]
        return found or [self.config.task]

    def split(self, task: str) -> Any:
        from oppu_hub.data import load_task_split

        if task not in self._splits:
            try:
                self._splits[task] = load_task_split(self.config.data_dir, task, self.config.split)
            except (OSError, ValueError, KeyError) as e:
                raise SpaceError(f"cannot read {task} {self.config.split} data in {self.config.data_dir}: {e}") from e
        return self._splits[task]

    def users(self, task: str) -> list[str]:
        """The split's users that have an adapter."""
        split = self.split(task)
        if _is_store(self.config.adapters_dir):
            store = self.store()
            repos = {r.repo_id for r in store.list(task=task)}
            return [u for u in split.user_ids if store.repo_id(u, task) in repos]
        from oppu_hub.adapters import is_complete
        from oppu_hub.io import safe_name

        return [u for u in split.user_ids if is_complete(self._adapters_root(task) / safe_name(u))]

    def queries(self, task: str, user: str) -> list[tuple[str, str]]:
        """(label, question id) of the user's held-out queries."""
        from oppu_hub.tasks import get_task

        t = get_task(task)
        out = []
        for q in self.split(task).user_questions(user):
            text = t.query_text(q.fields(t))
            out.append((f"{q.id}: {text[:90]}{'...' if len(text) > 90 else ''}", q.id))
        return out

    def question(self, task: str, user: str, qid: str) -> Any:
        for q in self.split(task).user_questions(user):
            if q.id == qid:
                return q
        raise SpaceError(f"user {user!r} has no query {qid!r} in {task}")

    def history_summary(self, task: str, user: str) -> tuple[str, list[tuple[str, int]]]:
        """A Markdown summary of the user's history and its label counts (classification and rating tasks)."""
        from oppu_hub.tasks import get_task

        t = get_task(task)
        history = self.split(task).user_history(user)
        dates = sorted(str(h["date"]) for h in history if h.get("date"))
        text = f"**{user}**: {len(history)} history items"
        text += f", {dates[0]} to {dates[-1]}" if dates else " (undated)"
        counts: list[tuple[str, int]] = []
        if t.label_key and t.kind in ("classification", "rating"):
            counts = Counter(str(h.get(t.label_key, "?")) for h in history).most_common()
            text += "; labels: " + ", ".join(f"{label} ({n})" for label, n in counts[:8])
        elif history:
            text += f"; latest: {t.history_line(history[-1])[:160]}"
        return text, counts

    # --- models ---------------------------------------------------------------------------------------
    def store(self) -> Any:
        from oppu_hub.store import open_store

        if self._store is None:
            self._store = open_store(self.config.adapters_dir)
        return self._store

    def _adapters_root(self, task: str, k: int = 0) -> Path:
        return Path(_fill(self.config.adapters_dir, task, k))

    def generator(self, task: str, k: int = 0) -> Any:
        """The resident base trained with ``k``-item prompts for ``task`` (loaded once; at most two stay)."""
        from oppu_hub.inference import Generator
        from oppu_hub.models import BaseModelConfig, load_base
        from trainers.base import read_base_record

        base = _fill(self.config.base_dir, task, k)
        if base not in self._generators:
            record = read_base_record(base) if Path(base).is_dir() else {}
            if record and (record.get("k"), record.get("profile")) != (k, False):
                raise SpaceError(f"the base {base!r} was trained with {record.get('variant')} prompts, not k{k}: "
                                 f"put {{variant}} in --base_dir")
            while len(self._generators) >= 2:
                self._generators.popitem(last=False)
            try:
                self._generators[base] = Generator(*load_base(BaseModelConfig(base)),
                                                   max_adapters=self.config.max_adapters)
            except (OSError, RuntimeError, ValueError) as e:
                raise SpaceError(f"cannot load base model {base!r}: {e}") from e
            self.base_loads += 1
        self._generators.move_to_end(base)
        return self._generators[base]

    def adapter_folder(self, task: str, user: str, k: int = 0) -> Path:
        """The user's adapter trained with ``k``-item prompts: from the folder, or the store's latest revision
        (pulled each time, so a new push is picked up; unchanged files come from the local cache)."""
        from oppu_hub.adapters import AdapterNotFoundError, AdapterRecord, check_setting, is_complete
        from oppu_hub.io import safe_name

        if not _is_store(self.config.adapters_dir):
            folder = self._adapters_root(task, k) / safe_name(user)
            if not is_complete(folder):
                raise AdapterNotFoundError(f"no adapter for user {user!r} in {self._adapters_root(task, k)}")
        else:
            store = self.store()
            try:
                folder = store.pull(store.repo_id(user, task))
            except Exception as e:  # store errors: not found, auth, connection
                raise AdapterNotFoundError(f"no adapter for user {user!r} in {store.describe()}: {e}") from e
        check_setting(AdapterRecord.from_folder(folder), k=k, profile=False, where=f"of {user!r}", hint="")
        return folder

    # --- the comparison -------------------------------------------------------------------------------
    def compare(self, task: str, user: str, mode: str, qid: str | None, free_text: str, k: int) -> dict[str, Any]:
        """Answers of the four methods with latencies, the retrieved items and notes for the UI."""
        from oppu_hub.adapters import AdapterNotFoundError
        from oppu_hub.inference import clean_answer
        from oppu_hub.prompts import PromptBuilder
        from oppu_hub.retrieval import BM25Retriever
        from oppu_hub.tasks import get_task

        if not task:
            raise SpaceError("choose a task")
        try:
            t = get_task(task)
        except KeyError as e:
            raise SpaceError(str(e)) from e
        if not user:
            raise SpaceError("choose a user")
        split = self.split(t.name)
        if user not in split.user_ids:
            raise SpaceError(f"user {user!r} is not in the {t.name} {self.config.split} data")
        k = max(0, int(k or 0))
        gold = None
        if mode == FREE_TEXT:
            text = (free_text or "").strip()
            if not text:
                raise SpaceError("the free-text query is empty: type an article/query, or pick a held-out query")
            try:
                fields = t.parse_input(text)
            except ValueError:
                fields = {f: "" for f in t.query_fields}
                fields[t.query_fields[0]] = text
            history = split.user_history(user)
        else:
            if not qid:
                raise SpaceError("the query is empty: pick one of the user's held-out queries, or use free text")
            q = self.question(t.name, user, qid)
            fields, history, gold = q.fields(t), q.profile, q.gold
        notes: list[str] = []
        retrieved = BM25Retriever(t, history).retrieve(t.query_text(fields), k)
        results = []
        with self._lock:
            for method, col_k, use_adapter in zip(METHODS, (0, k, 0, k), (False, False, True, True), strict=True):
                try:
                    generator = self.generator(t.name, col_k)
                    adapter = self._load_adapter(generator, t.name, user, col_k) if use_adapter else None
                except (SpaceError, AdapterNotFoundError, ValueError) as e:
                    note = _unavailable_note(e)
                    if note not in notes:
                        notes.append(note)
                    results.append({"method": method, "answer": f"(unavailable) {note}", "raw": "", "seconds": None})
                    continue
                builder = PromptBuilder(t, generator.tokenizer, self.config.max_prompt_length)
                prompt = builder.build(fields, retrieved if col_k else ())
                start = time.perf_counter()
                raw = generator.generate([prompt], [adapter], t.max_new_tokens)[0]
                results.append({"method": method, "answer": clean_answer(t, raw), "raw": raw,
                                "seconds": time.perf_counter() - start})
        if k > 0 and not retrieved:
            notes.append("The user's history is empty: nothing to retrieve.")
        return {"task": t.name, "user": user, "gold": gold, "query": t.query_text(fields), "k": k,
                "results": results, "notes": notes,
                "retrieved": [(i + 1, round(r.score, 3) if r.score is not None else None, str(r.item.get("date", "")),
                               str(r.item.get(t.label_key, "")) if t.label_key else "",
                               t.history_line(r.item)[:200]) for i, r in enumerate(retrieved)]}


    def _load_adapter(self, generator: Any, task: str, user: str, k: int) -> str:
        from oppu_hub.adapters import adapter_name

        return generator.load(self.adapter_folder(task, user, k), f"{adapter_name(user)}-k{k}")


def _unavailable_note(error: Exception) -> str:
    from oppu_hub.adapters import AdapterBaseMismatchError, AdapterNotFoundError, AdapterSettingMismatchError

    if isinstance(error, AdapterNotFoundError):
        return f"No adapter for this user: {error}"
    if isinstance(error, AdapterBaseMismatchError):
        return f"Adapter/base mismatch: {error}"
    if isinstance(error, AdapterSettingMismatchError):
        return f"Adapter trained for another column: {error}"
    if isinstance(error, SpaceError):
        return str(error)
    return f"Adapter cannot be loaded: {error}"


# --- the UI --------------------------------------------------------------------------------------------------
def _latency(result: dict[str, Any]) -> str:
    if result["seconds"] is None:
        return "latency: —"
    raw = result["raw"].replace("`", "'").replace("\n", " ")[:80]
    latency = f"latency **{result['seconds']:.2f} s**"
    return f"{latency} · raw: `{raw}`" if raw else latency


def build_app(config: SpaceConfig | None = None, backend: Backend | None = None) -> Any:
    """The Gradio Blocks app; ``compare`` is exposed as the ``/compare`` API endpoint."""
    import gradio as gr
    import pandas as pd

    config = config or SpaceConfig()
    backend = backend or Backend(config)
    tasks = backend.tasks()
    first_task = config.task if config.task in tasks else tasks[0]
    try:  # the first choices, so API calls are valid before any page load
        users = backend.users(first_task)
        queries = backend.queries(first_task, users[0]) if users else []
    except (SpaceError, OSError, KeyError, ValueError):
        users, queries = [], []

    def safe(fn: Any) -> Any:
        def wrapped(*args: Any) -> Any:
            try:
                return fn(*args)
            except SpaceError as e:
                raise gr.Error(str(e)) from e
            except (OSError, KeyError, ValueError, RuntimeError) as e:
                raise gr.Error(f"{type(e).__name__}: {e}") from e
        return wrapped

    def chart(counts: list[tuple[str, int]]) -> Any:
        frame = pd.DataFrame({"label": pd.Series([c[0] for c in counts], dtype="object"),
                              "count": pd.Series([c[1] for c in counts], dtype="int64")})
        return gr.BarPlot(frame, y_lim=[0, max([n for _, n in counts], default=1)])

    def on_task(task: str) -> tuple[Any, ...]:
        users = backend.users(task)
        note = "" if users else (f"**Warning:** No user of {task} ({config.split}) has an adapter in "
                                 f"`{config.adapters_dir}`.")
        user = users[0] if users else None
        return (gr.Dropdown(choices=users, value=user), *on_user(task, user), note)

    def on_user(task: str, user: str | None) -> tuple[Any, ...]:
        if not user:
            return gr.Dropdown(choices=[], value=None), "", "", chart([])
        queries = backend.queries(task, user)
        qid = queries[0][1] if queries else None
        summary, counts = backend.history_summary(task, user)
        return (gr.Dropdown(choices=queries, value=qid), on_query(task, user, qid), summary, chart(counts))

    def on_query(task: str, user: str | None, qid: str | None) -> str:
        if not user or not qid:
            return ""
        q = backend.question(task, user, qid)
        from oppu_hub.tasks import get_task

        t = get_task(task)
        return f"**Query** {q.id}: {t.query_text(q.fields(t))[:400]}\n\n**Gold answer:** `{q.gold}`"

    def compare(task: str, user: str, mode: str, qid: str | None, free_text: str, k: float) -> tuple[Any, ...]:
        out = backend.compare(task, user, mode, qid, free_text, int(k))
        for note in out["notes"]:
            gr.Warning(note)
        head = f"**{out['task']}**, user **{out['user']}**, k={out['k']}"
        if out["gold"] is not None:
            head += f" · gold: `{out['gold']}`"
        if out["notes"]:
            head += "\n\n" + "\n\n".join(f"**Warning:** {n}" for n in out["notes"])
        answers = [r["answer"] for r in out["results"]]
        latencies = [_latency(r) for r in out["results"]]
        table = pd.DataFrame(out["retrieved"], columns=["rank", "BM25 score", "date", "label", "item"])
        return (head, *answers, *latencies, table)

    with gr.Blocks(title="OPPU Hub: one PEFT per user") as app:
        gr.Markdown("# OPPU Hub: one PEFT per user\nA shared base LLM with each user's own LoRA adapter "
                    "(OPPU), with and without BM25 retrieval over the user's history (LaMP). "
                    "Profiles (the paper's PAG) are not shown in this Space.")
        with gr.Row():
            task_in = gr.Dropdown(tasks, value=first_task, label="Task", scale=1, allow_custom_value=True)
            user_in = gr.Dropdown(users, value=users[0] if users else None, label="User (users with an adapter)",
                                  scale=1, allow_custom_value=True)
            k_in = gr.Slider(0, 8, value=config.k, step=1, label="Retrieval depth k", scale=1)
        with gr.Row():
            mode_in = gr.Radio([HELD_OUT, FREE_TEXT], value=HELD_OUT, label="Query", scale=1)
            qid_in = gr.Dropdown(queries, value=queries[0][1] if queries else None, label="Held-out query", scale=3,
                                 allow_custom_value=True)
        free_in = gr.Textbox(label="Free-text query (used when 'free text' is selected)", lines=2)
        query_md = gr.Markdown()
        note_md = gr.Markdown()
        button = gr.Button("Compare", variant="primary")
        head_md = gr.Markdown()
        answers, latencies = [], []
        with gr.Row():
            for method in METHODS:
                with gr.Column(min_width=160):
                    label = {"RAG": "Base + retrieval (RAG)", "OPPU": "Base + user adapter (OPPU)",
                             "OPPU + RAG": "OPPU + retrieval"}.get(method, "Non-personalized base")
                    answers.append(gr.Textbox(label=label, interactive=False, elem_classes="oppu-answer"))
                    latencies.append(gr.Markdown())
        with gr.Row():
            with gr.Column(scale=3):
                retrieved_df = gr.Dataframe(headers=["rank", "BM25 score", "date", "label", "item"],
                                            label="Retrieved history (BM25, best first)", interactive=False,
                                            wrap=True, column_widths=["7%", "11%", "14%", "13%", "55%"])
            with gr.Column(scale=2):
                history_md = gr.Markdown()
                history_plot = gr.BarPlot(pd.DataFrame({"label": [], "count": []}), x="label", y="count",
                                          title="History labels", height=240)

        user_outputs = [qid_in, query_md, history_md, history_plot]
        task_in.change(safe(on_task), task_in, [user_in, *user_outputs, note_md], api_name="task")
        user_in.input(safe(on_user), [task_in, user_in], user_outputs, api_name="user")
        qid_in.input(safe(on_query), [task_in, user_in, qid_in], query_md, api_name="query")
        button.click(safe(compare), [task_in, user_in, mode_in, qid_in, free_in, k_in],
                     [head_md, *answers, *latencies, retrieved_df], api_name="compare")
        app.load(safe(on_task), task_in, [user_in, *user_outputs, note_md], api_name=False)
    app.backend = backend
    return app


def main(config: SpaceConfig | None = None, **launch: Any) -> Any:
    """Build and launch the app (``oppu-hub space`` / ``python space/app.py``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    config = config or SpaceConfig()
    app = build_app(config)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=config.host, server_port=config.port, **launch)
    return app


if __name__ == "__main__":
    main()
