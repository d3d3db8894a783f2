"""OPPU Hub Space: compare a shared base with and without a user's adapter and retrieval, side by side; sign in
with Hugging Face to make, compare and delete your own adapter.

**Compare.** Pick a task, a user who has an adapter, and one of their held-out queries (gold shown) or free text;
the four columns are the non-personalized base, base + BM25 retrieval (k), base + the user's adapter (OPPU) and
OPPU + retrieval, each with its latency. As in the paper (and ``oppu-hub eval``), each column uses a base and
adapters trained with that column's prompts: ``{variant}`` in the base and adapter paths is ``k0`` for the first
and third column and ``k{k}`` for the others; a column whose model was trained another way says so instead of
answering. At most two bases (k=0 and k) stay in memory; adapters are loaded on demand into each ``Generator``'s
LRU (keyed on the adapter's content, so a retrained or newly pushed adapter replaces the old one), so switching
users never reloads a base.

**Whose token reads what.** Over a Hub store (``hub:NAMESPACE``) adapters are read with the *visitor's* token:
an anonymous visitor's requests carry no token at all (public adapters only), a visitor signed in with Hugging
Face (OAuth; ``hf_oauth`` in the Space card) reads what their own token may, and also sees the adapters of their
own namespace. The Space's own token (``HF_TOKEN``) never reads an adapter. Every load asks the Hub whether the
visitor's token may read the adapter before a file is served (``HubStore.pull``), so the shared, owner-only
download cache never hands one visitor's private adapter to the next. A local folder or local store of adapters is
the operator's, read as before.

**Make my adapter.** A visitor uploads their history for a task (a LaMP profile: a JSON list of items, or JSON
Lines), checked as LaMP data is; their adapter is trained on the shared task-adapted k=0 base with ``train_users``
(one training at a time, the others queued), compared four ways on their query, and pushed to their own private
repo with their token (``HubStore.push``: card, tags, ``oppu.json``). **Delete my adapter** deletes it as
``oppu-hub delete`` does (:func:`oppu_hub.forget.forget_user`), with the Space's copies.

Run locally with ``make space`` / ``oppu-hub space`` (or ``python space/app.py``); deploy as a Hugging Face
Space with ``OPPU_HUB_STORE=hub:NAMESPACE`` (see README.md). Heavy imports (torch, gradio) are done lazily so
``oppu-hub`` can read :class:`SpaceConfig` for its flags cheaply.
"""

import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oppu_hub.data import newest_items
from oppu_hub.methods import SPACE_COLUMNS
from oppu_hub.store import is_store_spec, parse_store_spec

HELD_OUT = "held-out query"
FREE_TEXT = "free text"
METHODS = tuple(c.name for c in SPACE_COLUMNS)
MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # the token of gradio's sign-in outside a Space
LOCAL_VISITOR = "you"  # the user id of an adapter made where nobody signs in
QUERY_ID = "your query"
# Trained tokens/s of LoRA training on the 135M default base on 2 CPU cores, a shared and an idle machine
# (docs/performance.md), and the tokens of a LaMP-2N history item's training row there (3,139 for 32 items).
TRAIN_TOKENS_PER_S = (40, 150)
DEFAULT_BASE_PARAMS = 134.5e6
ITEM_TOKENS = 100


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


@dataclass
class SpaceConfig:
    """The Space's inputs. ``{task}`` in a path is replaced by the chosen task's name.

    Args:
        data_dir: LaMP-format data (``{data_dir}/{task}/{split}_questions.json``).
        base_dir: the task-adapted base (folder or Hub id); ``{variant}`` is the column's prompt variant (``k0``,
            ``k1``...), so each column gets the base trained with its prompts. Visitors' adapters are trained on
            the ``k0`` one.
        adapters_dir: a folder of users' adapters (``train-users`` output, ``{variant}`` as above) or a store spec
            (``hub:NAMESPACE``: one adapter per user and task, used by the column its ``oppu.json`` k matches).
        task: the task shown first; tasks with data (and, for a folder, adapters) are offered.
        split: whose users and held-out queries are shown.
        k: default retrieval depth.
        max_items: a visitor's adapter is trained on at most this many of their newest history items.
        train_epochs / train_learning_rate: of a visitor's adapter (default: the task's tuned user-adapter
            defaults, :mod:`oppu_hub.tuned`).
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
    task: str = field(default_factory=lambda: os.environ.get("OPPU_HUB_TASK", "LaMP-2N"),
                      metadata={"help": "task shown first (env OPPU_HUB_TASK)"})
    split: str = field(default="test", metadata={"help": "split whose users and queries are shown"})
    k: int = field(default=0, metadata={"help": "default retrieval depth"})
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


class SpaceError(ValueError):
    """A problem the user can fix (shown in the UI, never as a traceback)."""


@dataclass(frozen=True)
class Visitor:
    """Who asks: a visitor signed in with Hugging Face (their own token and Hub user name), or anonymous."""

    token: str | None = None
    name: str | None = None


ANONYMOUS = Visitor()


def _fill(template: str, task: str, k: int) -> str:
    return template.replace("{task}", task).replace("{variant}", f"k{k}")


def _get_task(name: str) -> Any:
    from oppu_hub.tasks import get_task

    if not name:
        raise SpaceError("choose a task")
    try:
        return get_task(name)
    except KeyError as e:
        raise SpaceError(str(e)) from e


def _free_text_fields(task: Any, text: str | None) -> dict[str, str]:
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


def _json_line(line: str, number: int, name: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise SpaceError(f"{name}, line {number}: not valid JSON ({e})") from e


def read_history(path: str | Path, task: Any, question: dict[str, Any]) -> list[dict[str, Any]]:
    """The history items of a visitor's upload, in time order: a JSON list of LaMP profile items (or a LaMP question
    with its ``profile``) or JSON Lines of items, checked as a LaMP question's profile is (:mod:`oppu_hub.data`)
    when it is the profile of ``question``."""
    from oppu_hub.data import LampDataError, chronological, parse_question

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


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def training_time(tokens: float, params: float = DEFAULT_BASE_PARAMS) -> str:
    """A guess of how long training ``tokens`` (epochs included) takes on a base of ``params`` parameters on this
    kind of CPU (:data:`TRAIN_TOKENS_PER_S`, scaled by the parameter count)."""
    slow, fast = (tokens * params / DEFAULT_BASE_PARAMS / rate for rate in TRAIN_TOKENS_PER_S)
    return f"about {_duration(fast)} to {_duration(slow)}"


class Backend:
    """Data, adapters, visitors and the resident bases behind the UI (usable without Gradio)."""

    def __init__(self, config: SpaceConfig) -> None:
        self.config = config
        self._splits: dict[str, Any] = {}
        self._generators: OrderedDict[str, Any] = OrderedDict()  # base path -> Generator (k=0 and k)
        self._store: Any = None
        self._names: OrderedDict[str, str] = OrderedDict()  # sha256 of a visitor's token -> their Hub name
        self._lock = threading.Lock()
        self.base_loads = 0
        # Visitors' uploads and trained adapters: owner-only, removed with the backend.
        self.work = Path(tempfile.mkdtemp(prefix="oppu-space-"))
        weakref.finalize(self, shutil.rmtree, self.work, True)

    @property
    def signs_in(self) -> bool:
        """Whether visitors sign in with Hugging Face: in a Space, or over a Hub store on a machine logged in to the
        Hub (gradio's local sign-in stands for that login)."""
        from huggingface_hub import get_token

        return bool(os.environ.get("SPACE_ID")) or (parse_store_spec(self.config.adapters_dir).kind == "hub"
                                                    and get_token() is not None)

    def visitor(self, token: str | None) -> Visitor:
        """The visitor holding the OAuth ``token`` (``None``: anonymous), named by the Hub (``whoami``, remembered).
        Outside a Space gradio's sign-in stands for this machine's own Hub login (its token is a placeholder), so
        that login's token is used, and only while the app is served to this machine alone."""
        from huggingface_hub import get_token

        from oppu_hub.hub_store import HubStore
        from oppu_hub.store_base import StoreError

        if token == MOCK_OAUTH_TOKEN and not os.environ.get("SPACE_ID"):
            if self.config.host not in ("127.0.0.1", "localhost", "::1"):
                raise SpaceError("signing in outside a Space stands for this machine's Hub login: serve the app on "
                                 "127.0.0.1 to use it, or deploy it as a Space")
            token = get_token()
        if not token:
            return ANONYMOUS
        key = hashlib.sha256(token.encode()).hexdigest()
        if key not in self._names:
            try:
                self._names[key] = HubStore(token=token, hash_user_ids=False).whoami()["name"]
            except StoreError as e:
                raise SpaceError(f"the Hub did not accept your sign-in ({e}): sign in again") from e
            while len(self._names) > 1024:
                self._names.popitem(last=False)
        return Visitor(token, self._names[key])

    # --- what can be shown ----------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        from oppu_hub.tasks import TASKS

        found = [t for t in TASKS if (Path(self.config.data_dir) / t / f"{self.config.split}_questions.json").is_file()
                 and (is_store_spec(self.config.adapters_dir) or self._adapters_root(t).is_dir())]
        return found or [self.config.task]

    def split(self, task: str) -> Any:
        from oppu_hub.data import load_task_split

        if task not in self._splits:
            try:
                self._splits[task] = load_task_split(self.config.data_dir, task, self.config.split)
            except (OSError, ValueError, KeyError) as e:
                raise SpaceError(f"cannot read {task} {self.config.split} data in {self.config.data_dir}: {e}") from e
        return self._splits[task]

    def users(self, task: str, visitor: Visitor = ANONYMOUS) -> list[str]:
        """The split's users that have an adapter ``visitor`` may read."""
        split = self.split(task)
        if is_store_spec(self.config.adapters_dir):
            store = self.store(visitor)
            repos = {r.repo_id for r in store.list(task=task)}
            return [u for u in split.user_ids if store.repo_id(u, task) in repos]
        from oppu_hub.adapters import is_complete
        from oppu_hub.io import safe_name

        return [u for u in split.user_ids if is_complete(self._adapters_root(task) / safe_name(u))]

    def own_adapters(self, task: str, visitor: Visitor) -> list[str]:
        """The ``task`` adapter repos of the signed-in visitor's own namespace (those of the split's users, listed
        by :meth:`users`, left out)."""
        if visitor.name is None:
            return []
        data_repos: set[str] = set()
        if parse_store_spec(self.config.adapters_dir).kind == "hub":
            store = self.store(visitor)
            data_repos = {store.repo_id(u, task) for u in self.split(task).user_ids}
        return [r.repo_id for r in self.own_store(visitor).list(task=task) if r.repo_id not in data_repos]

    def is_own_repo(self, task: str, user: str) -> bool:
        """Whether ``user`` names a repo of :meth:`own_adapters` rather than a user of the split."""
        return user not in self.split(task).user_ids and "/" in user

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

    # --- stores and models ----------------------------------------------------------------------------
    def store(self, visitor: Visitor = ANONYMOUS) -> Any:
        """The adapters' store as ``visitor`` reads it: a Hub store with the visitor's token, or with none at all
        (``token=False``: public repos only), never the Space's own; a local store is the operator's."""
        from oppu_hub.store import open_store

        spec = parse_store_spec(self.config.adapters_dir)
        if spec.kind == "hub":
            if spec.namespace is None:
                raise SpaceError(f"{self.config.adapters_dir!r} names no namespace: the Space reads hub:NAMESPACE, "
                                 f"never the namespace of its own token")
            return open_store(self.config.adapters_dir, token=visitor.token or False)
        if self._store is None:
            self._store = open_store(self.config.adapters_dir)
        return self._store

    def own_store(self, visitor: Visitor) -> Any:
        """The signed-in visitor's own Hub namespace, read and written with their token (users named by their raw
        id: the namespace already names them)."""
        from oppu_hub.hub_store import HubStore

        if visitor.name is None:
            raise SpaceError("sign in with Hugging Face first")
        return HubStore(visitor.name, token=visitor.token, hash_user_ids=False)

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

    def adapter_folder(self, task: str, user: str, k: int = 0, visitor: Visitor = ANONYMOUS) -> Path:
        """The adapter of a user of the split (trained with ``k``-item prompts when adapters are in a folder), or
        one of the visitor's own repos: from the folder, or the store's latest revision read as ``visitor``
        (pulled each time, so a new push is picked up and the Hub checks the visitor's access every time)."""
        from oppu_hub.adapters import AdapterNotFoundError, is_complete
        from oppu_hub.io import safe_name

        own = self.is_own_repo(task, user)
        if not own and not is_store_spec(self.config.adapters_dir):
            folder = self._adapters_root(task, k) / safe_name(user)
            if not is_complete(folder):
                raise AdapterNotFoundError(f"no adapter for user {user!r} in {self._adapters_root(task, k)}")
            return folder
        if own and user.split("/")[0] != visitor.name:
            raise AdapterNotFoundError(f"{user} is not one of your adapters: sign in as its owner")
        store = self.own_store(visitor) if own else self.store(visitor)
        try:
            return store.pull(user if own else store.repo_id(user, task))  # the store checks the token each time
        except Exception as e:  # store errors: not found, auth, connection
            raise AdapterNotFoundError(f"no adapter for user {user!r} in {store.describe()}: {e}") from e

    # --- the comparison -------------------------------------------------------------------------------
    def compare(self, task: str, user: str, mode: str, qid: str | None, free_text: str, k: int,
                visitor: Visitor = ANONYMOUS) -> dict[str, Any]:
        """Answers of the four methods with latencies, the retrieved items and notes for the UI."""
        t = _get_task(task)
        if not user:
            raise SpaceError("choose a user")
        split = self.split(t.name)
        own = self.is_own_repo(t.name, user)
        if not own and user not in split.user_ids:
            raise SpaceError(f"user {user!r} is not in the {t.name} {self.config.split} data")
        gold = None
        if own and mode != FREE_TEXT:
            raise SpaceError(f"{user} has no held-out queries: choose 'free text' and type a query")
        if mode == FREE_TEXT:
            fields = _free_text_fields(t, free_text)
            history = [] if own else split.user_history(user)
        else:
            if not qid:
                raise SpaceError("the query is empty: pick one of the user's held-out queries, or use free text")
            q = self.question(t.name, user, qid)
            fields, history, gold = q.fields(t), q.profile, q.gold
        out = self._answers(t, fields, history, k, user,
                            lambda col_k: self.adapter_folder(t.name, user, col_k, visitor))
        if out["k"] > 0 and not history:
            out["notes"].append("Your adapter's repo keeps no history: nothing to retrieve." if own
                                else "The user's history is empty: nothing to retrieve.")
        return {**out, "user": user, "gold": gold}

    def compare_made(self, made: dict[str, Any] | None, free_text: str, k: int) -> dict[str, Any]:
        """:meth:`compare` for an adapter just made (:meth:`make_adapter`), with its uploaded history."""
        if not made:
            raise SpaceError("make your adapter first: upload your history and press 'Train my adapter'")
        t = _get_task(made["task"])
        out = self._answers(t, _free_text_fields(t, free_text), made["history"], k, f"made-{made['id']}",
                            lambda col_k: Path(made["folder"]))
        return {**out, "user": made["user"], "gold": None}

    def _answers(self, t: Any, fields: dict[str, str], history: list[dict[str, Any]], k: int, key: str,
                 folder_for: Callable[[int], Path]) -> dict[str, Any]:
        """The four columns for one query: each with the base of its k and, for OPPU, the adapter ``folder_for(k)``
        if it was trained with that k (``key`` names it among the resident adapters)."""
        from oppu_hub.adapters import AdapterNotFoundError, AdapterRecord, adapter_name, check_setting
        from oppu_hub.inference import clean_answer
        from oppu_hub.prompts import PromptBuilder
        from oppu_hub.retrieval import BM25Retriever

        k = max(0, int(k or 0))
        notes: list[str] = []
        retrieved = BM25Retriever(t, history).retrieve(t.query_text(fields), k)
        results = []
        with self._lock:
            for method, col_k, use_adapter in zip(METHODS, (0, k, 0, k), (False, False, True, True), strict=True):
                try:
                    generator = self.generator(t.name, col_k)
                    adapter = None
                    if use_adapter:
                        folder = folder_for(col_k)
                        check_setting(AdapterRecord.from_folder(folder), k=col_k, profile=False, hint="")
                        adapter = generator.load(folder, f"{adapter_name(key)}-k{col_k}")
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
        return {"task": t.name, "query": t.query_text(fields), "k": k, "results": results, "notes": notes,
                "retrieved": [(i + 1, round(r.score, 3) if r.score is not None else None, str(r.item.get("date", "")),
                               str(r.item.get(t.label_key, "")) if t.label_key else "",
                               t.history_line(r.item)[:200]) for i, r in enumerate(retrieved)]}

    # --- a visitor's own adapter ----------------------------------------------------------------------
    def training_config(self, task: str, data_dir: Path, output_dir: Path, user: str) -> Any:
        """The ``train_users`` config of a visitor's adapter: the k=0 base, the task's tuned defaults (epochs and
        learning rate as configured)."""
        from trainers import UserAdapterConfig

        return UserAdapterConfig.for_task(
            task, data_dir=str(data_dir), split=self.config.split, base_dir=_fill(self.config.base_dir, task, 0), k=0,
            output_dir=str(output_dir), users=[user], max_prompt_length=self.config.max_prompt_length,
            num_train_epochs=self.config.train_epochs, learning_rate=self.config.train_learning_rate)

    def make_adapter(self, task: str, upload: str | None, query: str, visitor: Visitor,
                     progress: Callable[[float, str], None] = lambda fraction, desc: None) -> dict[str, Any]:
        """Train ``visitor``'s adapter for ``task`` on their uploaded history (its newest ``max_items`` items) into
        a folder of its own, then push it to their private repo when they are signed in. Returns what the UI
        shows and :meth:`compare_made` needs."""
        from oppu_hub.io import private_dir

        t = _get_task(task)
        if self.signs_in and visitor.name is None:
            raise SpaceError("sign in with Hugging Face first: your adapter is trained for you and pushed to a "
                             "private repo of yours")
        if not upload:
            raise SpaceError("upload your history first: a JSON list of LaMP profile items, or JSON Lines")
        if not (query or "").strip():
            raise SpaceError("type a query first: the comparison after training answers it")
        user = visitor.name or LOCAL_VISITOR
        fields = _free_text_fields(t, query)
        progress(0.02, "checking your history")
        question = {"id": QUERY_ID, "input": t.format_input(**fields), "user_id": user}
        items = read_history(upload, t, question)
        used = newest_items(items, self.config.max_items)
        made_id = uuid.uuid4().hex
        folder = private_dir(self.work / "made" / made_id)
        try:
            return self._train(t, folder, made_id, {**question, "profile": used}, len(items), visitor, progress)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # the visitor's upload leaves with a failed training
            raise

    def _train(self, t: Any, folder: Path, made_id: str, question: dict[str, Any], uploaded: int, visitor: Visitor,
               progress: Callable[[float, str], None]) -> dict[str, Any]:
        from oppu_hub.io import safe_name, write_json
        from oppu_hub.prompts import PromptBuilder, history_examples
        from trainers import train_users

        used, user = question["profile"], question["user_id"]
        write_json(folder / "data" / t.name / f"{self.config.split}_questions.json", [question])
        config = self.training_config(t.name, folder / "data", folder / "adapters", user)
        progress(0.05, "loading the base")
        generator = self.generator(t.name, 0)
        rows = history_examples(PromptBuilder(t, generator.tokenizer, config.max_prompt_length), used)
        tokens = sum(len(generator.tokenizer(r.get("text") or r["prompt"] + r["completion"]).input_ids) for r in rows)
        progress(0.1, f"training on {len(used)} items x {config.num_train_epochs:g} epochs ({tokens} tokens): "
                      f"{training_time(tokens * config.num_train_epochs, generator.base.num_parameters())}")
        start = time.perf_counter()
        try:
            report = train_users(config)
        except (OSError, ValueError, RuntimeError) as e:
            raise SpaceError(f"cannot train your adapter: {e}") from e
        if user in report.failed:
            raise SpaceError(f"training your adapter failed: {report.failed[user]}")
        made = {"id": made_id, "dir": str(folder), "task": t.name, "user": user, "history": used, "items": uploaded,
                "folder": str(config.adapters_dir() / safe_name(user)), "epochs": config.num_train_epochs,
                "seconds": time.perf_counter() - start, "repo": None, "url": None}
        if visitor.name is not None:
            progress(0.9, "pushing to your private repo")
            pushed = self.own_store(visitor).push(made["folder"])
            made.update(repo=pushed.repo_id, url=pushed.url)
        progress(1.0, "done")
        return made

    def my_adapters(self, visitor: Visitor) -> list[Any]:
        """The visitor's own adapter repos (every task): those :meth:`delete_mine` deletes."""
        return self.own_store(visitor).list(user_id=visitor.name)

    def delete_mine(self, visitor: Visitor) -> list[str]:
        """Delete the visitor's adapter repos with all their revisions and this machine's downloads of them, as
        ``oppu-hub delete`` does; returns the deleted repo ids."""
        from oppu_hub.forget import forget_user

        return forget_user(visitor.name, store=self.own_store(visitor)).repos


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


def _remove_made(made: dict[str, Any] | None) -> None:
    """Remove a made adapter's folder (its upload, data and weights) from the Space's disk."""
    if made:
        shutil.rmtree(made["dir"], ignore_errors=True)


# --- the UI --------------------------------------------------------------------------------------------------
def _latency(result: dict[str, Any]) -> str:
    if result["seconds"] is None:
        return "latency: —"
    raw = result["raw"].replace("`", "'").replace("\n", " ")[:80]
    latency = f"latency **{result['seconds']:.2f} s**"
    return f"{latency} · raw: `{raw}`" if raw else latency


def _made_summary(made: dict[str, Any]) -> str:
    used, uploaded = len(made["history"]), made["items"]
    of = f" (the newest of the {uploaded} uploaded)" if uploaded > used else ""
    text = (f"**Trained** your {made['task']} adapter on {used} history items{of} x {made['epochs']:g} epochs in "
            f"{_duration(made['seconds'])}.")
    if made["repo"]:
        return text + (f" **Pushed** to your private repo [{made['repo']}]({made['url']}) (model card, tags, "
                       f"`oppu.json`); it is listed under *Compare* after a reload.")
    return text + " Not pushed: nobody signs in here (that needs a Space or a Hub store); it lives in this session."


def build_app(config: SpaceConfig | None = None, backend: Backend | None = None) -> Any:
    """The Gradio Blocks app, queued (one training at a time, at most ``max_queue`` waiting); ``compare`` is the
    ``/compare`` API endpoint, ``make`` trains a visitor's adapter, ``delete`` deletes it."""
    import gradio as gr
    import pandas as pd

    from oppu_hub.tuned import user_settings

    config = config or SpaceConfig()
    backend = backend or Backend(config)
    tasks = backend.tasks()
    first_task = config.task if config.task in tasks else tasks[0]
    try:  # the first choices, so API calls are valid before any page load
        users = backend.users(first_task)
        queries = backend.queries(first_task, users[0]) if users else []
    except (SpaceError, OSError, KeyError, ValueError, RuntimeError):
        users, queries = [], []

    def safe(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # gradio reads the OAuth and progress parameters from the signature
        def wrapped(*args: Any) -> Any:
            try:
                return fn(*args)
            except SpaceError as e:
                raise gr.Error(str(e)) from e
            except (OSError, KeyError, ValueError, RuntimeError) as e:
                raise gr.Error(f"{type(e).__name__}: {e}") from e
        return wrapped

    def visitor_of(oauth: gr.OAuthToken | None) -> Visitor:
        return backend.visitor(oauth.token if oauth else None)

    def chart(counts: list[tuple[str, int]]) -> Any:
        frame = pd.DataFrame({"label": pd.Series([c[0] for c in counts], dtype="object"),
                              "count": pd.Series([c[1] for c in counts], dtype="int64")})
        return gr.BarPlot(frame, y_lim=[0, max([n for _, n in counts], default=1)])

    def render(out: dict[str, Any]) -> tuple[Any, ...]:
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

    def comparison(css_class: str) -> list[Any]:
        """The four answer columns (``css_class``) with their latencies, then the retrieved items (the outputs of
        ``render``)."""
        head = gr.Markdown()
        answers, latencies = [], []
        with gr.Row():
            for method in METHODS:
                with gr.Column(min_width=160):
                    label = {"RAG": "Base + retrieval (RAG)", "OPPU": "Base + user adapter (OPPU)",
                             "OPPU + RAG": "OPPU + retrieval"}.get(method, "Non-personalized base")
                    answers.append(gr.Textbox(label=label, interactive=False, elem_classes=css_class))
                    latencies.append(gr.Markdown())
        table = gr.Dataframe(headers=["rank", "BM25 score", "date", "label", "item"],
                             label="Retrieved history (BM25, best first)", interactive=False, wrap=True,
                             column_widths=["7%", "11%", "14%", "13%", "55%"])
        return [head, *answers, *latencies, table]

    def on_task(task: str, oauth: gr.OAuthToken | None) -> tuple[Any, ...]:
        visitor = visitor_of(oauth)
        choices = [(u, u) for u in backend.users(task, visitor)]
        choices += [(f"{r} (yours)", r) for r in backend.own_adapters(task, visitor)]
        note = "" if choices else (f"**Warning:** No user of {task} ({config.split}) has an adapter in "
                                   f"`{config.adapters_dir}` that you may read.")
        user = choices[0][1] if choices else None
        return (gr.Dropdown(choices=choices, value=user), *on_user(task, user), note)

    def on_user(task: str, user: str | None) -> tuple[Any, ...]:
        if not user:
            return gr.Dropdown(choices=[], value=None), "", "", chart([]), gr.skip()
        if backend.is_own_repo(task, user):
            return (gr.Dropdown(choices=[], value=None), "Type a free-text query for your adapter.",
                    f"**{user}**: your adapter; its repo keeps no history, so retrieval has nothing to search.",
                    chart([]), gr.Radio(value=FREE_TEXT))
        queries = backend.queries(task, user)
        qid = queries[0][1] if queries else None
        summary, counts = backend.history_summary(task, user)
        return (gr.Dropdown(choices=queries, value=qid), on_query(task, user, qid), summary, chart(counts),
                gr.skip())

    def on_query(task: str, user: str | None, qid: str | None) -> str:
        if not user or not qid:
            return ""
        q = backend.question(task, user, qid)
        t = _get_task(task)
        return f"**Query** {q.id}: {t.query_text(q.fields(t))[:400]}\n\n**Gold answer:** `{q.gold}`"

    def compare(task: str, user: str, mode: str, qid: str | None, free_text: str, k: float,
                oauth: gr.OAuthToken | None) -> tuple[Any, ...]:
        return render(backend.compare(task, user, mode, qid, free_text, int(k), visitor_of(oauth)))

    def make(task: str, upload: str | None, query: str, made: dict[str, Any] | None, oauth: gr.OAuthToken | None,
             progress: gr.Progress = gr.Progress()  # noqa: B008 - gradio finds its progress bar by this default
             ) -> tuple[str, dict[str, Any]]:
        new = backend.make_adapter(task, upload, query, visitor_of(oauth),
                                   lambda fraction, desc: progress(fraction, desc=desc))
        _remove_made(made)  # a session keeps its latest adapter only
        return _made_summary(new), new

    def compare_made(query: str, k: float, made: dict[str, Any] | None) -> tuple[Any, ...]:
        return render(backend.compare_made(made, query, int(k)))

    def mine(oauth: gr.OAuthToken | None) -> str:
        visitor = visitor_of(oauth)
        if visitor.name is None:
            return "Sign in with Hugging Face to see and delete your adapters."
        refs = backend.my_adapters(visitor)
        if not refs:
            return f"**{visitor.name}** has no adapter repo (user `{visitor.name}`) yet."
        return f"Your adapter repos (user `{visitor.name}`):\n\n" + "\n".join(
            f"- `{r.repo_id}` ({r.task or '?'}, {'private' if r.private else 'public'})" for r in refs)

    def delete(confirm: bool, made: dict[str, Any] | None, oauth: gr.OAuthToken | None) -> tuple[str, None, str]:
        visitor = visitor_of(oauth)
        if visitor.name is None:
            raise SpaceError("sign in with Hugging Face first: only you can delete your adapter")
        if not confirm:
            raise SpaceError("tick the box to confirm: deleting cannot be undone")
        deleted = backend.delete_mine(visitor)
        _remove_made(made)
        done = ("Deleted " + ", ".join(f"`{r}`" for r in deleted) + " with all revisions.") if deleted else \
            "Nothing to delete."
        return done, None, mine(oauth)

    epochs = user_settings(first_task, num_train_epochs=config.train_epochs)["num_train_epochs"]
    # Uploaded histories are personal data: gradio's copies are deleted after an hour (checked every 10 minutes).
    with gr.Blocks(title="OPPU Hub: one PEFT per user", delete_cache=(600, 3600)) as app:
        gr.Markdown("# OPPU Hub: one PEFT per user\nA shared base LLM with each user's own LoRA adapter "
                    "(OPPU), with and without BM25 retrieval over the user's history (LaMP). "
                    "Profiles (the paper's PAG) are not shown in this Space.")
        if backend.signs_in:
            with gr.Row():
                gr.LoginButton(scale=0)
                gr.Markdown("Signed in, you see your own (private) adapters, read with your token; without signing "
                            "in, only public ones. The Space's own token never reads an adapter.")
        made_state = gr.State(None, delete_callback=_remove_made)
        with gr.Tab("Compare"):
            with gr.Row():
                task_in = gr.Dropdown(tasks, value=first_task, label="Task", scale=1, allow_custom_value=True)
                user_in = gr.Dropdown(users, value=users[0] if users else None, label="User (users with an adapter)",
                                      scale=1, allow_custom_value=True)
                k_in = gr.Slider(0, 8, value=config.k, step=1, label="Retrieval depth k", scale=1)
            with gr.Row():
                mode_in = gr.Radio([HELD_OUT, FREE_TEXT], value=HELD_OUT, label="Query", scale=1)
                qid_in = gr.Dropdown(queries, value=queries[0][1] if queries else None, label="Held-out query",
                                     scale=3, allow_custom_value=True)
            free_in = gr.Textbox(label="Free-text query (used when 'free text' is selected)", lines=2)
            query_md = gr.Markdown()
            note_md = gr.Markdown()
            button = gr.Button("Compare", variant="primary")
            outputs = comparison("oppu-answer")
            with gr.Row():
                with gr.Column(scale=2):
                    history_md = gr.Markdown()
                with gr.Column(scale=2):
                    history_plot = gr.BarPlot(pd.DataFrame({"label": [], "count": []}), x="label", y="count",
                                              title="History labels", height=240)
        with gr.Tab("Make my adapter"):
            gr.Markdown(
                f"Upload your history for a task: a LaMP profile (a JSON list of items with the task's fields, e.g. "
                f"`id`, `text`, `title`, `category`, `date` for LaMP-2N) or JSON Lines, one item per line. Your "
                f"adapter is trained on your newest {config.max_items} items, on the shared task-adapted base, then "
                f"answers your query next to the other three columns"
                + (" and is pushed to a private repo of yours (sign in first)." if backend.signs_in else ".")
                + f"\n\n**Expected time:** one training runs at a time, on this Space's CPU: {config.max_items} "
                  f"items x {epochs:g} epochs take {training_time(config.max_items * epochs * ITEM_TOKENS)} with the "
                  f"default 135M base (your estimate is shown when your training starts). Others wait in the queue "
                  f"(at most {config.max_queue}) and see their position.")
            with gr.Row():
                make_task = gr.Dropdown(tasks, value=first_task, label="Task", scale=1)
                upload_in = gr.File(label="Your history (.json / .jsonl)", file_types=[".json", ".jsonl"], scale=2,
                                    elem_id="oppu-upload")
            with gr.Row():
                make_query = gr.Textbox(label="Your query (an article, abstract, review...)", lines=2, scale=3)
                make_k = gr.Slider(0, 8, value=config.k, step=1, label="Retrieval depth k", scale=1)
            with gr.Row():
                make_button = gr.Button("Train my adapter", variant="primary")
                again_button = gr.Button("Compare again")
            made_md = gr.Markdown("*Nothing trained in this session yet.*", elem_id="oppu-made",
                                  min_height=60)  # room for the progress bar
            made_outputs = comparison("oppu-made-answer")
        if backend.signs_in:
            with gr.Tab("Delete my adapter"):
                mine_md = gr.Markdown()
                confirm_in = gr.Checkbox(label="I understand: this deletes my adapter repos (every task, every "
                                               "revision) and the Space's copies; it cannot be undone")
                delete_button = gr.Button("Delete my adapter", variant="stop")
                deleted_md = gr.Markdown()

        user_outputs = [qid_in, query_md, history_md, history_plot, mode_in]
        task_in.change(safe(on_task), task_in, [user_in, *user_outputs, note_md], api_name="task")
        user_in.input(safe(on_user), [task_in, user_in], user_outputs, api_name="user")
        qid_in.input(safe(on_query), [task_in, user_in, qid_in], query_md, api_name="query")
        button.click(safe(compare), [task_in, user_in, mode_in, qid_in, free_in, k_in], outputs, api_name="compare")
        made = make_button.click(safe(make), [make_task, upload_in, make_query, made_state], [made_md, made_state],
                                 api_name="make", concurrency_limit=1, concurrency_id="train")
        made.success(safe(compare_made), [make_query, make_k, made_state], made_outputs, api_name=False)
        again_button.click(safe(compare_made), [make_query, make_k, made_state], made_outputs, api_name="compare_made")
        app.load(safe(on_task), task_in, [user_in, *user_outputs, note_md], api_name=False)
        if backend.signs_in:
            made.success(safe(mine), None, mine_md, api_name=False)
            delete_button.click(safe(delete), [confirm_in, made_state], [deleted_md, made_state, mine_md],
                                api_name="delete")
            app.load(safe(mine), None, mine_md, api_name="mine")
    app.queue(max_size=config.max_queue, default_concurrency_limit=1)
    app.backend = backend
    return app


def main(config: SpaceConfig | None = None, **launch: Any) -> Any:
    """Build and launch the app (``oppu-hub space`` / ``python space/app.py``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    config = config or SpaceConfig()
    app = build_app(config)
    app.launch(server_name=config.host, server_port=config.port, max_file_size="5mb", **launch)
    return app


if __name__ == "__main__":
    main()
