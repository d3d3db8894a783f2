"""OPPU Hub Space: the page of :mod:`oppu_hub.compare`, laid out with Gradio. It compares, for one LaMP user and one
query, the non-personalized base, base + retrieval, base + the user's adapter (OPPU), OPPU + retrieval and
optionally OPPU with contrastive decoding; a visitor makes, compares and deletes their own adapter.

This file holds the layout and the event wiring only: every answer, list, check and training is a call into the
library (``oppu_hub.compare``: the :class:`~oppu_hub.compare.Backend`; ``compare_make``: a visitor's adapter;
``compare_view``: how results read), so the same calls serve ``oppu-hub space``, the tests and this page.

Run locally with ``make space`` / ``oppu-hub space`` (or ``python space/app.py``); deploy as a Hugging Face Space
with ``OPPU_HUB_STORE=hub:NAMESPACE`` (see README.md).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd

from oppu_hub.compare import Backend
from oppu_hub.compare_config import FREE_TEXT, GENERATE, HELD_OUT, LABELS, SpaceConfig, SpaceError, Visitor
from oppu_hub.compare_make import MadeAdapter, expected_time
from oppu_hub.compare_view import (
    Comparison,
    answer_detail,
    answer_text,
    gains_caption,
    head_markdown,
    history_markdown,
    made_markdown,
    query_markdown,
    retrieved_table,
    shorten,
)
from oppu_hub.methods import SPACE_COLUMNS, SPACE_CONTRASTIVE, SPACE_TWO_STAGE
from oppu_hub.tasks import get_task

PAPER = "https://arxiv.org/abs/2402.04401"
RETRIEVED = "Retrieved history (BM25, best first)"
OPTIONAL = (SPACE_CONTRASTIVE, SPACE_TWO_STAGE)  # columns shown when their checkbox is ticked
COLUMNS = (*SPACE_COLUMNS, *OPTIONAL)
# An answer's box framed by its mark (compare_view.answer_detail): green right, red wrong, amber dashed off the labels.
CSS = """
.oppu-col:has(.oppu-mark-right) textarea { border: 2px solid #16a34a !important; background: #f0fdf4 !important; }
.oppu-col:has(.oppu-mark-wrong) textarea { border: 2px solid #dc2626 !important; background: #fef2f2 !important; }
.oppu-col:has(.oppu-mark-off) textarea { border-style: dashed !important; border-color: #d97706 !important; }
.oppu-mark-right { color: #15803d; font-weight: 600; }
.oppu-mark-wrong { color: #b91c1c; font-weight: 600; }
.oppu-mark-off { color: #b45309; font-weight: 600; }
"""
INTRO = (
    "# OPPU Hub: one PEFT per user\n"
    f"[One PEFT Per User (OPPU, Tan et al. 2024)]({PAPER}) gives every user a small adapter (here LoRA) trained on "
    "their own history and plugged into one shared, task-adapted base LLM; it combines with retrieval of the user's "
    "history items (BM25, *k* of them in the prompt). Compare the four answers below on LaMP users, or make your "
    "own adapter from your history.")


def table(task: str, comparison: Comparison | None = None) -> pd.DataFrame:
    headers, rows = retrieved_table(get_task(task), comparison)
    return pd.DataFrame(rows, columns=headers)


def history(backend: Backend, task: str, user: str | None) -> tuple[str, pd.DataFrame | None]:
    """The user's history summary and its label counts (``None`` for a task without labels)."""
    if not user or backend.is_own_repo(task, user):
        return "", None
    summary = backend.history_summary(task, user)
    if not summary.counts:
        return history_markdown(summary), None
    return history_markdown(summary), pd.DataFrame({
        "label": pd.Series([c[0] for c in summary.counts], dtype="object"),
        "count": pd.Series([c[1] for c in summary.counts], dtype="int64")})


def chart(frame: pd.DataFrame | None) -> Any:
    """The label chart of :func:`history` (hidden without labels)."""
    if frame is None:
        return gr.BarPlot(visible=False)
    return gr.BarPlot(frame, visible=True, y_lim=[0, int(frame["count"].max())])


def render(comparison: Comparison | None, message: str = "", task: str = "LaMP-2N") -> list[Any]:
    """The comparison's outputs (:func:`answer_columns`): head, six answers, six detail lines (marks, method,
    latency), the optional columns' visibility, the retrieved items' visibility (none at k=0) and the items;
    ``message`` (no comparison) replaces the stale answers with one line."""
    if comparison is None:
        return [f"**⚠ {message}**", *[""] * (2 * len(COLUMNS)), *[gr.skip()] * len(OPTIONAL),
                gr.Column(visible=False), table(task)]
    by_name = {c.name: c for c in comparison.columns}
    boxes = [answer_text(by_name[c.name]) if c.name in by_name else "" for c in COLUMNS]
    details = [answer_detail(by_name[c.name]) if c.name in by_name else "" for c in COLUMNS]
    return [head_markdown(comparison), *boxes, *details, *[gr.Column(visible=c.name in by_name) for c in OPTIONAL],
            gr.Column(visible=bool(comparison.retrieved)), table(comparison.task, comparison)]


def k_choice(backend: Backend, task: str, **layout: Any) -> Any:
    """The retrieval depths with trained models for ``task`` (:meth:`Backend.ks`)."""
    ks = backend.ks(task)
    info = "the depths with trained models here" if len(ks) > 1 else f"only k={ks[0]} has trained models here"
    return gr.Radio([(f"k={k}", k) for k in ks], value=backend.default_k(task), interactive=len(ks) > 1, info=info,
                    **layout)


class Page:
    """The page's event handlers: each turns a library call into component updates."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.config = backend.config

    def visitor(self, oauth: gr.OAuthToken | None) -> Visitor:
        return self.backend.visitor(oauth.token if oauth else None)

    # --- Compare ------------------------------------------------------------------------------------------
    def view(self, task: str, oauth: gr.OAuthToken | None) -> dict[str, Any]:
        """What the Compare tab shows of ``task`` first: its users (with the visitor's own repos), the query
        chosen to show personalization (:meth:`Backend.default_query`), its user's history; raises
        :class:`SpaceError` when the data or store cannot be read."""
        visitor = self.visitor(oauth)
        users = [(u, u) for u in self.backend.users(task, visitor)]
        users += [(f"{r} (yours)", r) for r in self.backend.own_adapters(task, visitor)]
        pick = self.backend.default_query(task)
        user = pick[0] if pick and (pick[0], pick[0]) in users else users[0][1] if users else None
        queries = self.backend.queries(task, user) if user and not self.backend.is_own_repo(task, user) else []
        qid = pick[1] if pick and pick[0] == user else queries[0][1] if queries else None
        summary, frame = history(self.backend, task, user)
        note = "" if users else (f"**⚠ No user of {task} ({self.config.split}) has an adapter in "
                                 f"`{self.config.adapters_dir}` that you may read.**")
        return {"users": users, "user": user, "queries": queries, "qid": qid, "query": self.on_query(task, user, qid),
                "history": summary, "frame": frame, "note": note}

    def on_task(self, task: str, oauth: gr.OAuthToken | None) -> list[Any]:
        """Users, the query shown first, k choices and answer modes of ``task``; one readable note when the data
        or store cannot be read."""
        try:
            view = self.view(task, oauth)
        except SpaceError as e:
            return [gr.skip()] * 8 + [f"**⚠ {e}**"]
        return [gr.Dropdown(choices=view["users"], value=view["user"]),
                gr.Dropdown(choices=view["queries"], value=view["qid"]), view["query"], view["history"],
                chart(view["frame"]), HELD_OUT, k_choice(self.backend, task),
                gr.Radio(visible=bool(get_task(task).labels), value=GENERATE), view["note"]]

    def on_user(self, task: str, user: str | None, qid: str | None = None) -> list[Any]:
        """The user's queries (``qid`` first, else their first), the query, the history summary and chart."""
        summary, frame = history(self.backend, task, user)
        if not user:
            return [gr.Dropdown(choices=[], value=None), "", summary, chart(frame), gr.skip()]
        if self.backend.is_own_repo(task, user):
            return [gr.Dropdown(choices=[], value=None), "",
                    f"**{user}**: your adapter; its repo keeps no history, so retrieval has nothing to search.",
                    chart(frame), FREE_TEXT]
        queries = self.backend.queries(task, user)
        qid = qid if qid in [q for _, q in queries] else queries[0][1] if queries else None
        return [gr.Dropdown(choices=queries, value=qid), self.on_query(task, user, qid), summary, chart(frame),
                HELD_OUT]

    def on_query(self, task: str, user: str | None, qid: str | None) -> str:
        if not user or not qid:
            return ""
        return query_markdown(get_task(task), self.backend.question(task, user, qid))

    @staticmethod
    def on_mode(mode: str) -> list[Any]:
        """Free text hides the held-out query and its gold."""
        held_out = mode != FREE_TEXT
        return [gr.Dropdown(visible=held_out), gr.Markdown(visible=held_out), gr.Textbox(visible=not held_out)]

    def compare(self, task: str, user: str, mode: str, qid: str | None, free_text: str, k: float, answers: str,
                contrastive: bool, two_stage: bool, oauth: gr.OAuthToken | None) -> list[Any]:
        try:
            return render(self.backend.compare(task, user, mode, qid, free_text, k, self.visitor(oauth), answers,
                                               contrastive, two_stage))
        except SpaceError as e:
            return render(None, str(e), task)

    def example(self, task: str, user: str, mode: str, qid: str | None, free_text: str, k: float,
                oauth: gr.OAuthToken | None) -> list[Any]:
        """A clicked example: its user's view, then its comparison."""
        selected = self.on_user(task, user, qid)
        return [*selected[:4], *self.compare(task, user, mode, qid, free_text, k, GENERATE, False, False, oauth)]

    def examples(self, task: str) -> tuple[list[list[Any]], list[str]]:
        """The query shown first, the user's other queries and one free-text query: rows and labels."""
        pick = self.backend.default_query(task)
        if pick is None:
            return [], []
        user, qid = pick
        k = self.backend.default_k(task)
        t = get_task(task)
        rows, labels = [], []
        for q in self.backend.split(task).user_questions(user)[:3]:
            rows.append([task, user, HELD_OUT, q.id, "", k])
            labels.append(f"{user}: {shorten(t.query_text(q.fields(t)), 40)}")
        other = next((u for u in self.backend.users(task) if u != user), None)
        if other:
            text = t.query_text(self.backend.split(task).user_questions(other)[0].fields(t))
            rows.append([task, user, FREE_TEXT, None, text, k])
            labels.append(f"{user}, free text: {shorten(text, 30)}")
        return rows, labels

    # --- Make my adapter ----------------------------------------------------------------------------------
    def on_make_task(self, task: str) -> list[Any]:
        sample = self.backend.sample_history(task)
        return [k_choice(self.backend, task), gr.DownloadButton(value=str(sample[0]) if sample else None,
                                                                visible=sample is not None),
                gr.Radio(visible=bool(get_task(task).labels), value=GENERATE)]

    def make(self, task: str, upload: str | None, query: str, k: float, made: MadeAdapter | None,
             oauth: gr.OAuthToken | None,
             progress: gr.Progress = gr.Progress()  # noqa: B008 - gradio finds its progress bar by this default
             ) -> tuple[str, MadeAdapter]:
        try:
            new = self.backend.make_adapter(task, upload, query, self.visitor(oauth), k,
                                            lambda fraction, desc: progress(fraction, desc=desc))
        except SpaceError as e:
            raise gr.Error(str(e)) from e
        if made:
            made.remove()  # a session keeps its latest adapter only
        return made_markdown(new), new

    def compare_made(self, query: str, k: float, answers: str, contrastive: bool, two_stage: bool,
                     made: MadeAdapter | None) -> list[Any]:
        try:
            return render(self.backend.compare_made(made, query, k, answers, contrastive, two_stage))
        except SpaceError as e:
            return render(None, str(e), made.task if made else self.config.task)

    # --- Delete my adapter --------------------------------------------------------------------------------
    def mine(self, oauth: gr.OAuthToken | None) -> list[Any]:
        """The visitor's repos; the delete controls work once they are signed in."""
        try:
            visitor = self.visitor(oauth)
            if visitor.name is None:
                text = "Sign in with Hugging Face to see and delete your adapters."
            elif refs := self.backend.my_adapters(visitor):
                text = f"Your adapter repos (user `{visitor.name}`):\n\n" + "\n".join(
                    f"- `{r.repo_id}` ({r.task or '?'}, {'private' if r.private else 'public'})" for r in refs)
            else:
                text = f"**{visitor.name}** has no adapter repo (user `{visitor.name}`) yet."
        except SpaceError as e:
            return [f"**⚠ {e}**", gr.Checkbox(interactive=False), gr.Button(interactive=False)]
        signed_in = visitor.name is not None
        return [text, gr.Checkbox(interactive=signed_in), gr.Button(interactive=signed_in)]

    def delete(self, confirm: bool, made: MadeAdapter | None, oauth: gr.OAuthToken | None) -> list[Any]:
        try:
            visitor = self.visitor(oauth)
            if visitor.name is None:
                return ["**⚠ Sign in with Hugging Face first: only you can delete your adapter.**", *[gr.skip()] * 4]
            if not confirm:
                return ["**⚠ Tick the box to confirm: deleting cannot be undone.**", *[gr.skip()] * 4]
            deleted = self.backend.delete_mine(visitor)
        except SpaceError as e:
            return [f"**⚠ {e}**", *[gr.skip()] * 4]
        if made:
            made.remove()
        done = ("Deleted " + ", ".join(f"`{r}`" for r in deleted) + " with all revisions.") if deleted else \
            "Nothing to delete."
        return [done, None, self.mine(oauth)[0], gr.Checkbox(value=False), gr.skip()]


def quiet(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with any other failure of the data or models shown as one toast (gradio reads the OAuth and
    progress parameters from the signature, which ``wraps`` keeps)."""
    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except SpaceError as e:
            raise gr.Error(str(e)) from e
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise gr.Error(f"{type(e).__name__}: {e}") from e
    return wrapped


def decoding(task: str) -> tuple[Any, Any, Any]:
    """How a tab's columns decode: generated or label-scored answers (label tasks); the optional columns."""
    with gr.Row():
        answers = gr.Radio([GENERATE, LABELS], value=GENERATE, label="Answers", scale=1,
                           visible=bool(get_task(task).labels),
                           info="generate them, or score each of the task's labels and take the best")
        contrastive = gr.Checkbox(label="Add a column: OPPU + retrieval with contrastive decoding (oppu-cd: the "
                                        "adapter's log-probabilities minus half the base's)", scale=1)
        two_stage = gr.Checkbox(label="Add a column: two-stage (a LoRA trained on the training users' histories, "
                                      "merged into the base, plus this user's residual adapter on it; no other "
                                      "evaluated user's data is in the shared part)", scale=1)
    return answers, contrastive, two_stage


def answer_columns(css_class: str, task: str) -> list[Any]:
    """A comparison's outputs (those of :func:`render`): head, the answer columns (the optional ones hidden), the
    retrieved items."""
    head = gr.Markdown()
    boxes, details, optional = [], [], []
    with gr.Row():
        for column in COLUMNS:
            with gr.Column(min_width=160, visible=column not in OPTIONAL, elem_classes=["oppu-col"]) as box:
                boxes.append(gr.Textbox(label=column.label, interactive=False, elem_classes=[css_class]))
                details.append(gr.Markdown())
            if column in OPTIONAL:
                optional.append(box)
    headers, _ = retrieved_table(get_task(task), None)
    with gr.Column(visible=False) as shown:
        retrieved = gr.Dataframe(headers=headers, label=RETRIEVED, interactive=False, wrap=True)
    return [head, *boxes, *details, *optional, shown, retrieved]


def build_app(config: SpaceConfig | None = None, backend: Backend | None = None) -> gr.Blocks:
    """The Gradio Blocks app, queued (one training at a time, at most ``max_queue`` waiting); ``compare`` is the
    ``/compare`` API endpoint, ``make`` trains a visitor's adapter, ``delete`` deletes it."""
    config = config or SpaceConfig()
    backend = backend or Backend(config)
    page = Page(backend)
    tasks = backend.tasks()
    first = config.task if config.task in tasks else tasks[0]
    try:  # the first view, computed here so it shows (and API calls are valid) before the page's load event
        view = page.view(first, None)
    except SpaceError as e:
        view = {"users": [], "user": None, "queries": [], "qid": None, "query": "", "history": "", "frame": None,
                "note": f"**⚠ {e}**"}
    sample = backend.sample_history(first)
    # Uploaded histories are personal data: gradio's copies are deleted after an hour (checked every 10 minutes).
    with gr.Blocks(title="OPPU Hub: one PEFT per user", delete_cache=(600, 3600)) as app:
        gr.Markdown(INTRO)
        if backend.signs_in:
            with gr.Row():
                gr.LoginButton(scale=0)
                gr.Markdown("Signed in, you see your own (private) adapters, read with your token; without signing "
                            "in, only public ones. The Space's own token never reads an adapter.")
        made_state = gr.State(None, delete_callback=lambda made: made.remove() if made else None)
        with gr.Tab("Compare"):
            with gr.Row():
                task_in = gr.Dropdown(tasks, value=first, label="Task", scale=1)
                user_in = gr.Dropdown(view["users"], value=view["user"], scale=1, label="User (users with an adapter)",
                                      allow_custom_value=True)
                k_in = k_choice(backend, first, label="Retrieval depth k", scale=1, elem_id="oppu-k")
            with gr.Row():
                mode_in = gr.Radio([HELD_OUT, FREE_TEXT], value=HELD_OUT, label="Query", scale=1)
                qid_in = gr.Dropdown(view["queries"], value=view["qid"], label="Held-out query", scale=3,
                                     allow_custom_value=True)
                free_in = gr.Textbox(label="Free-text query", lines=2, scale=3, visible=False)
            answers_in, cd_in, two_in = decoding(first)
            query_md = gr.Markdown(view["query"])
            note_md = gr.Markdown(view["note"])
            button = gr.Button("Compare", variant="primary")
            outputs = answer_columns("oppu-compare", first)
            with gr.Row():
                history_md = gr.Markdown(view["history"])
                frame = view["frame"]
                history_plot = gr.BarPlot(frame, x="label", y="count", title="History labels", height=240,
                                          elem_id="oppu-history-plot", visible=frame is not None,
                                          y_lim=[0, int(frame["count"].max())] if frame is not None else None)
            rows, labels = page.examples(first)
            if rows:
                gr.Examples(rows, [task_in, user_in, mode_in, qid_in, free_in, k_in],
                            [qid_in, query_md, history_md, history_plot, *outputs], quiet(page.example),
                            run_on_click=True, example_labels=labels, label="Examples (click to compare)")
        with gr.Tab("Make my adapter"):
            gr.Markdown(
                f"Upload your history for a task: a LaMP profile (a JSON list of items with the task's fields, e.g. "
                f"`id`, `text`, `title`, `category`, `date` for LaMP-2N; download the sample below) or JSON Lines, "
                f"one item per line. Your adapter is trained on your newest {config.max_items} items on the shared "
                f"task-adapted base, once for k=0 and once for the k you pick (so every column has its adapter), "
                f"then answers your query next to the other columns"
                + (" and the k=0 one is pushed to a private repo of yours (sign in first)." if backend.signs_in
                   else ".")
                + f"\n\n**Expected time:** one training runs at a time, on this Space's CPU: "
                  f"{expected_time(config, first, backend.default_k(first))} (your estimate is shown when your "
                  f"training starts). Others wait in the queue (at most {config.max_queue}) and see their position.")
            with gr.Row():
                make_task = gr.Dropdown(tasks, value=first, label="Task", scale=1)
                upload_in = gr.File(label="Your history (.json / .jsonl)", file_types=[".json", ".jsonl"], scale=2,
                                    elem_id="oppu-upload")
                sample_out = gr.DownloadButton("Download a sample history", value=str(sample[0]) if sample else None,
                                               visible=sample is not None, scale=1)
            with gr.Row():
                make_query = gr.Textbox(label="Your query (an article, abstract, review...)", lines=2, scale=3)
                make_k = k_choice(backend, first, label="Retrieval depth k", scale=1, elem_id="oppu-make-k")
            make_answers, make_cd, make_two = decoding(first)
            if sample:
                gr.Examples([[first, str(sample[0]), sample[1]]], [make_task, upload_in, make_query],
                            example_labels=[f"the sample history + {shorten(sample[1], 60)}"],
                            label="Example (click to fill in)")
            with gr.Row():
                make_button = gr.Button("Train my adapter", variant="primary")
                again_button = gr.Button("Compare again")
            made_md = gr.Markdown("*Nothing trained in this session yet.*", elem_id="oppu-made",
                                  min_height=60)  # room for the progress bar
            made_outputs = answer_columns("oppu-made", first)
        if backend.signs_in:
            with gr.Tab("Delete my adapter"):
                mine_md = gr.Markdown()
                confirm_in = gr.Checkbox(label="I understand: this deletes my adapter repos (every task, every "
                                               "revision) and the Space's copies; it cannot be undone",
                                         interactive=False)
                delete_button = gr.Button("Delete my adapter", variant="stop", interactive=False)
                deleted_md = gr.Markdown()
        caption = gains_caption(config.gains_plot)
        if caption:
            with gr.Tab("Leaderboard: per-user gains"):
                gr.Image(config.gains_plot, show_label=False, interactive=False, height=480)
                gr.Markdown(caption)

        user_outputs = [qid_in, query_md, history_md, history_plot, mode_in]
        task_outputs = [user_in, *user_outputs, k_in, answers_in, note_md]
        task_in.input(quiet(page.on_task), task_in, task_outputs, api_name="task")
        user_in.input(quiet(page.on_user), [task_in, user_in], user_outputs, api_name="user")
        qid_in.input(quiet(page.on_query), [task_in, user_in, qid_in], query_md, api_name="query")
        mode_in.change(page.on_mode, mode_in, [qid_in, query_md, free_in], api_name=False)
        for checkboxes, columns in (((cd_in, two_in), outputs), ((make_cd, make_two), made_outputs)):
            for checkbox, box in zip(checkboxes, columns[-2 - len(OPTIONAL):-2], strict=True):
                checkbox.change(lambda on: gr.Column(visible=on), checkbox, box, api_name=False)
        button.click(quiet(page.compare),
                     [task_in, user_in, mode_in, qid_in, free_in, k_in, answers_in, cd_in, two_in], outputs,
                     api_name="compare")
        make_task.change(quiet(page.on_make_task), make_task, [make_k, sample_out, make_answers], api_name=False)
        made = make_button.click(quiet(page.make), [make_task, upload_in, make_query, make_k, made_state],
                                 [made_md, made_state], api_name="make", concurrency_limit=1, concurrency_id="train")
        compare_made = [make_query, make_k, make_answers, make_cd, make_two, made_state]
        made.success(quiet(page.compare_made), compare_made, made_outputs, api_name=False)
        again_button.click(quiet(page.compare_made), compare_made, made_outputs, api_name="compare_made")
        app.load(quiet(page.on_task), task_in, task_outputs, api_name=False)
        if backend.signs_in:
            made.success(quiet(page.mine), None, [mine_md, confirm_in, delete_button], api_name=False)
            delete_button.click(quiet(page.delete), [confirm_in, made_state],
                                [deleted_md, made_state, mine_md, confirm_in, delete_button], api_name="delete")
            app.load(quiet(page.mine), None, [mine_md, confirm_in, delete_button], api_name="mine")
    app.queue(max_size=config.max_queue, default_concurrency_limit=1)
    app.backend = backend
    return app


def main(config: SpaceConfig | None = None, **launch: Any) -> gr.Blocks:
    """Build and launch the app (``oppu-hub space`` / ``python space/app.py``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    config = config or SpaceConfig()
    app = build_app(config)
    app.launch(server_name=config.host, server_port=config.port, max_file_size="5mb", css=CSS, **launch)
    return app


if __name__ == "__main__":
    main()
