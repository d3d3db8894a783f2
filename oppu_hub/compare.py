"""Side-by-side answers of one query by the Space's columns (:data:`~oppu_hub.methods.SPACE_COLUMNS`: the base, base
+ retrieval, the user's adapter, adapter + retrieval; optionally :data:`~oppu_hub.methods.SPACE_CONTRASTIVE` and
:data:`~oppu_hub.methods.SPACE_TWO_STAGE`), with
the data, stores and resident models behind them: what the Space (``space/app.py``) shows, usable without Gradio.

As in the paper and ``oppu-hub eval``, each column runs its method (:class:`~oppu_hub.methods.Method`) with the base
and adapters trained with its prompts (``{variant}`` in the paths: ``k0``, ``k{k}``) and decodes as eval does
(:func:`oppu_hub.inference.answerer`: generation, ``answers="labels"`` label scoring, contrastive decoding). Only
the retrieval depths whose models exist are offered (:meth:`Backend.ks`). At most three bases (k=0, k and the
two-stage column's collective base) stay in memory; adapters load on demand into each
:class:`~oppu_hub.inference.Generator`'s LRU.

**Whose token reads what.** Over a Hub store (``hub:NAMESPACE``) adapters are read with the *visitor's* token
(:class:`~oppu_hub.compare_config.Visitor`): none at all for an anonymous visitor (public adapters only), theirs
once signed in; the Space's own token never reads an adapter, and every load asks the Hub again
(:meth:`HubStore.pull <oppu_hub.hub_store.HubStore.pull>`). A local folder or store is the operator's.

A visitor's own adapter (*Make my adapter*) is :mod:`oppu_hub.compare_make`; how results read on the page,
:mod:`oppu_hub.compare_view`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import get_token

from trainers.base import read_base_record

from .adapters import (
    AdapterNotFoundError,
    AdapterRecord,
    AdapterSettingMismatchError,
    adapter_name,
    check_setting,
    is_complete,
)
from .compare_config import (
    ANONYMOUS,
    ANSWER_MODES,
    FREE_TEXT,
    GENERATE,
    MOCK_OAUTH_TOKEN,
    SpaceConfig,
    SpaceError,
    Visitor,
    free_text_fields,
    task_of,
    variant_ks,
)
from .compare_defaults import default_query
from .compare_make import MadeAdapter, make_adapter, sample_history
from .compare_view import ColumnAnswer, Comparison, HistorySummary, mark, shorten, unavailable_note
from .data import LampSplit, Question, load_task_split
from .forget import forget_user
from .hub_store import HubStore
from .inference import Generator, answerer, clean_answer
from .io import safe_name
from .methods import SPACE_COLUMNS, SPACE_CONTRASTIVE, SPACE_TWO_STAGE, Method, SpaceColumn
from .models import BaseModelConfig, load_base
from .predict_config import PredictConfig
from .prompts import PromptBuilder
from .retrieval import BM25Retriever, Retrieved
from .store import is_store_spec, open_store, parse_store_spec
from .store_base import AdapterStore, StoreError
from .tasks import TASKS, Task, get_task

FolderFor = Callable[[Method], Path]  # the adapter folder a column's method uses


class Backend:
    """Data, adapters, visitors and the resident bases behind the comparison page."""

    def __init__(self, config: SpaceConfig) -> None:
        self.config = config
        self._splits: dict[str, LampSplit] = {}
        self._generators: OrderedDict[str, Generator] = OrderedDict()  # base path -> Generator (k=0 and k)
        self._store: AdapterStore | None = None
        self._names: OrderedDict[str, str] = OrderedDict()  # sha256 of a visitor's token -> their Hub name
        self._defaults: dict[str, tuple[str, str] | None] = {}
        self._lock = threading.RLock()
        self.base_loads = 0
        # Visitors' uploads and trained adapters: owner-only, removed with the backend.
        self.work = Path(tempfile.mkdtemp(prefix="oppu-space-"))
        weakref.finalize(self, shutil.rmtree, self.work, True)

    # --- visitors -------------------------------------------------------------------------------------
    @property
    def signs_in(self) -> bool:
        """Whether visitors sign in with Hugging Face: in a Space, or over a Hub store on a machine logged in to the
        Hub (gradio's local sign-in stands for that login)."""
        return bool(os.environ.get("SPACE_ID")) or (parse_store_spec(self.config.adapters_dir).kind == "hub"
                                                    and get_token() is not None)

    def visitor(self, token: str | None) -> Visitor:
        """The visitor holding the OAuth ``token`` (``None``: anonymous), named by the Hub (``whoami``, remembered).
        Outside a Space gradio's sign-in stands for this machine's own Hub login (its token is a placeholder), so
        that login's token is used, and only while the app is served to this machine alone."""
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
        """Tasks with data and (for a folder of adapters) adapters; the configured one if none."""
        found = [t for t in TASKS if (Path(self.config.data_dir) / t / f"{self.config.split}_questions.json").is_file()
                 and (is_store_spec(self.config.adapters_dir)
                      or Path(self.config.fill(self.config.adapters_dir, t, 0)).is_dir())]
        return found or [self.config.task]

    def ks(self, task: str) -> list[int]:
        """The retrieval depths offered for ``task``: ``config.ks``, else those with both a base and adapters in
        the ``{variant}`` folders (0 and ``config.k`` where neither can be listed here)."""
        if self.config.ks:
            return sorted(set(self.config.ks))
        known = [ks for ks in (variant_ks(self.config.base_dir, task), None if is_store_spec(self.config.adapters_dir)
                               else variant_ks(self.config.adapters_dir, task)) if ks is not None]
        if not known:
            return sorted({0, self.config.k})
        return sorted(set.intersection(*known)) or [0]

    def default_k(self, task: str) -> int:
        ks = self.ks(task)
        return self.config.k if self.config.k in ks else ks[0]

    def check_k(self, task: str, k: float | None) -> int:
        k = int(k or 0)
        if k not in self.ks(task):
            raise SpaceError(f"no {task} models were trained with k={k} retrieved items here: choose k in "
                             f"{', '.join(map(str, self.ks(task)))}")
        return k

    def split(self, task: str) -> LampSplit:
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
            try:
                repos = {r.repo_id for r in store.list(task=task)}
            except StoreError as e:
                raise SpaceError(f"cannot list the adapters in {self.config.adapters_dir}: {e}") from e
            return [u for u in split.user_ids if store.repo_id(u, task) in repos]
        root = Path(self.config.fill(self.config.adapters_dir, task, 0))  # the OPPU column's adapters
        return [u for u in split.user_ids if is_complete(root / safe_name(u))]

    def own_adapters(self, task: str, visitor: Visitor) -> list[str]:
        """The ``task`` adapter repos of the signed-in visitor's own namespace (those of the split's users, listed
        by :meth:`users`, left out)."""
        if visitor.name is None:
            return []
        data_repos: set[str] = set()
        if parse_store_spec(self.config.adapters_dir).kind == "hub":
            store = self.store(visitor)
            data_repos = {store.repo_id(u, task) for u in self.split(task).user_ids}
        try:
            refs = self.own_store(visitor).list(task=task)
        except StoreError as e:
            raise SpaceError(f"cannot list your adapters on the Hub: {e}") from e
        return [r.repo_id for r in refs if r.repo_id not in data_repos]

    def is_own_repo(self, task: str, user: str) -> bool:
        """Whether ``user`` names a repo of :meth:`own_adapters` rather than a user of the split."""
        return user not in self.split(task).user_ids and "/" in user

    def queries(self, task: str, user: str) -> list[tuple[str, str]]:
        """(label, question id) of the user's held-out queries."""
        t = get_task(task)
        out = []
        for q in self.split(task).user_questions(user):
            text = t.query_text(q.fields(t))
            out.append((f"{q.id}: {shorten(text, 90)}", q.id))
        return out

    def question(self, task: str, user: str, qid: str) -> Question:
        for q in self.split(task).user_questions(user):
            if q.id == qid:
                return q
        raise SpaceError(f"user {user!r} has no query {qid!r} in {task}")

    def history_summary(self, task: str, user: str) -> HistorySummary:
        """The user's history at a glance; label counts for classification and rating tasks only."""
        t = get_task(task)
        history = self.split(task).user_history(user)
        dates = sorted(str(h["date"]) for h in history if h.get("date"))
        counts = None
        if t.label_key and t.labels:
            counts = Counter(str(h.get(t.label_key, "?")) for h in history).most_common()
        return HistorySummary(user, len(history), dates[0] if dates else None, dates[-1] if dates else None,
                              counts, t.history_line(history[-1]) if history and counts is None else None)

    # --- the first query shown ------------------------------------------------------------------------
    def default_query(self, task: str) -> tuple[str, str] | None:
        """(user, question id) shown first (:func:`oppu_hub.compare_defaults.default_query`), found once."""
        if task not in self._defaults:
            self._defaults[task] = default_query(self, task)
        return self._defaults[task]

    # --- stores and models ----------------------------------------------------------------------------
    def store(self, visitor: Visitor = ANONYMOUS) -> AdapterStore:
        """The adapters' store as ``visitor`` reads it: a Hub store with the visitor's token, or with none at all
        (``token=False``: public repos only), never the Space's own; a local store is the operator's."""
        spec = parse_store_spec(self.config.adapters_dir)
        if spec.kind == "hub":
            if spec.namespace is None:
                raise SpaceError(f"{self.config.adapters_dir!r} names no namespace: the Space reads hub:NAMESPACE, "
                                 f"never the namespace of its own token")
            return open_store(self.config.adapters_dir, token=visitor.token or False)
        if self._store is None:
            self._store = open_store(self.config.adapters_dir)
        return self._store

    def own_store(self, visitor: Visitor) -> HubStore:
        """The signed-in visitor's own Hub namespace, read and written with their token (users named by their raw
        id: the namespace already names them)."""
        if visitor.name is None:
            raise SpaceError("sign in with Hugging Face first")
        return HubStore(visitor.name, token=visitor.token, hash_user_ids=False)

    def generator(self, task: str, k: int = 0, template: str | None = None) -> Generator:
        """The resident base trained with ``k``-item prompts for ``task`` (loaded once; at most three stay): the
        task-adapted one, or the base ``template`` names (the two-stage column's collective base)."""
        base = self.config.fill(template or self.config.base_dir, task, k)
        with self._lock:
            if base not in self._generators:
                record = read_base_record(base) if Path(base).is_dir() else {}
                if record and (record.get("k"), record.get("profile")) != (k, False):
                    raise SpaceError(f"the base {base!r} was trained with {record.get('variant')} prompts, not k{k}: "
                                     f"put {{variant}} in --base_dir")
                while len(self._generators) >= 3:
                    self._generators.popitem(last=False)
                try:
                    self._generators[base] = Generator(*load_base(BaseModelConfig(base)),
                                                       max_adapters=self.config.max_adapters)
                except (OSError, RuntimeError, ValueError) as e:
                    raise SpaceError(f"cannot load base model {base!r}: {e}") from e
                self.base_loads += 1
            self._generators.move_to_end(base)
            return self._generators[base]

    def adapter_folder(self, task: str, user: str, k: int = 0, visitor: Visitor = ANONYMOUS,
                       two_stage: bool = False) -> Path:
        """The adapter of a user of the split (trained with ``k``-item prompts when adapters are in a folder), or
        one of the visitor's own repos: from the folder, or the store's latest revision read as ``visitor``
        (pulled each time, so a new push is picked up and the Hub checks the visitor's access every time).
        ``two_stage``: the user's adapter on the collective base (a folder of the split's users only)."""
        own = self.is_own_repo(task, user)
        if two_stage and own:
            raise AdapterNotFoundError("your repo holds an adapter on the task-adapted base; the two-stage column "
                                       "needs one trained on the collective base")
        if two_stage or (not own and not is_store_spec(self.config.adapters_dir)):
            template = self.config.two_stage_adapters_dir if two_stage else self.config.adapters_dir
            root = Path(self.config.fill(template, task, k))
            if not is_complete(root / safe_name(user)):
                raise AdapterNotFoundError(f"no adapter for user {user!r} in {root}")
            return root / safe_name(user)
        if own and user.split("/")[0] != visitor.name:
            raise AdapterNotFoundError(f"{user} is not one of your adapters: sign in as its owner")
        store = self.own_store(visitor) if own else self.store(visitor)
        try:
            return store.pull(user if own else store.repo_id(user, task))  # the store checks the token each time
        except Exception as e:  # store errors: not found, auth, connection
            raise AdapterNotFoundError(f"no adapter for user {user!r} in {store.describe()}: {e}") from e

    # --- the comparison -------------------------------------------------------------------------------
    def compare(self, task: str, user: str, mode: str, qid: str | None, free_text: str | None, k: float | None,
                visitor: Visitor = ANONYMOUS, answers: str = GENERATE, contrastive: bool = False,
                two_stage: bool = False) -> Comparison:
        """Every column's answer to a held-out query of ``user`` (``mode`` :data:`HELD_OUT`, ``qid``) or to
        ``free_text`` (``mode`` :data:`FREE_TEXT`), with retrieval depth ``k`` (one of :meth:`ks`); ``answers``:
        :data:`GENERATE` or :data:`LABELS`; ``contrastive`` adds the contrastive-decoding column, ``two_stage`` the
        two-stage one."""
        t = task_of(task)
        if not user:
            raise SpaceError("choose a user")
        split = self.split(t.name)
        own = self.is_own_repo(t.name, user)
        if not own and user not in split.user_ids:
            raise SpaceError(f"user {user!r} is not in the {t.name} {self.config.split} data")
        if mode == FREE_TEXT:
            fields, history, gold = free_text_fields(t, free_text), [] if own else split.user_history(user), None
        elif own:
            raise SpaceError(f"{user} has no held-out queries: choose 'free text' and type a query")
        elif not qid:
            raise SpaceError("the query is empty: pick one of the user's held-out queries, or use free text")
        else:
            q = self.question(t.name, user, qid)
            fields, history, gold = q.fields(t), q.profile, q.gold
        out = self.answer(t, fields, history, gold, self.check_k(t.name, k), user, answers, contrastive, two_stage,
                          lambda m: self.adapter_folder(t.name, user, m.k, visitor, m.collective is not None))
        if out.k > 0 and not history:
            out.notes.append("Your adapter's repo keeps no history: nothing to retrieve." if own
                             else "The user's history is empty: nothing to retrieve.")
        return out

    def compare_made(self, made: MadeAdapter | None, free_text: str | None, k: float | None, answers: str = GENERATE,
                     contrastive: bool = False, two_stage: bool = False) -> Comparison:
        """:meth:`compare` for an adapter just made (:meth:`make_adapter`), with its uploaded history."""
        if not made:
            raise SpaceError("make your adapter first: upload your history and press 'Train my adapter'")
        t = task_of(made.task)
        k = self.check_k(t.name, k)

        def folder_for(method: Method) -> Path:
            if method.collective:
                raise AdapterSettingMismatchError("your adapter was trained on the task-adapted base; the two-stage "
                                                  "column needs one trained on the collective base")
            if method.k not in made.folders:
                raise AdapterSettingMismatchError(f"your adapter was trained for k={', '.join(map(str, made.folders))}"
                                                  f": train it again with k={method.k}")
            return Path(made.folders[method.k])

        out = self.answer(t, free_text_fields(t, free_text), made.history, None, k, f"made-{made.id}", answers,
                          contrastive, two_stage, folder_for)
        out.user = made.user
        return out

    def answer(self, t: Task, fields: dict[str, str], history: list[dict[str, Any]], gold: str | None, k: int,
               key: str, answers: str, contrastive: bool, two_stage: bool, folder_for: FolderFor) -> Comparison:
        """Every column's answer to one query: each with the base of its k (the two-stage column: the collective
        base) and, for OPPU, the adapter ``folder_for(method)`` if it was trained with that k (``key`` names it
        among the resident adapters)."""
        mode = ANSWER_MODES.get(answers, answers)
        if mode not in ("generate", "labels"):
            raise SpaceError(f"answers are generated or label-scored, not {answers!r}")
        retrieved = BM25Retriever(t, history).retrieve(t.query_text(fields), k)
        columns = [*SPACE_COLUMNS, *[SPACE_CONTRASTIVE] * contrastive, *[SPACE_TWO_STAGE] * two_stage]
        results = [mark(t, self.column(t, c, k, fields, retrieved, key, folder_for, mode), gold) for c in columns]
        notes = list(dict.fromkeys(r.note for r in results if r.note))
        return Comparison(t.name, key, k, t.query_text(fields), gold, mode if t.labels else "generate", results,
                          retrieved, notes)

    def column(self, t: Task, column: SpaceColumn, k: int, fields: dict[str, str], retrieved: list[Retrieved],
                key: str, folder_for: FolderFor, answers: str) -> ColumnAnswer:
        """``column``'s answer when the visitor picks ``k``: its method's base, adapter and decoding, or a note saying
        why it cannot answer."""
        method = column.method(k)
        out = ColumnAnswer(column.name, column.label, method.name)
        with self._lock:
            try:
                adapter, folder = None, None
                if method.oppu:
                    folder = folder_for(method)  # first: a missing adapter is a note, not a base load
                base_template = self.config.two_stage_base_dir if method.collective else self.config.base_dir
                base_dir = self.config.fill(base_template, t.name, method.k)
                if method.collective and not Path(base_dir).is_dir():
                    raise AdapterNotFoundError(f"no collective base in {base_dir}: train one with oppu-hub "
                                               f"train-collective (make demo does)")
                generator = self.generator(t.name, method.k, base_template)
                if folder is not None:
                    check_setting(AdapterRecord.from_folder(folder), k=method.k, profile=False, hint="")
                    adapter = generator.load(folder, f"{adapter_name(key)}-k{method.k}")
                # The method's decoding as eval runs it (label scoring, contrastive decoding, generation).
                config = PredictConfig(task=t.name, data_dir=self.config.data_dir, split=self.config.split,
                                       base_dir=base_dir,
                                       adapters_dir=str(folder) if folder else None, method=method.name,
                                       answers=answers, max_prompt_length=self.config.max_prompt_length, batch_size=1)
            except (SpaceError, AdapterNotFoundError, ValueError) as e:
                out.note = unavailable_note(e)
                return out
            prompt = PromptBuilder(t, generator.tokenizer, config.max_prompt_length).build(fields, retrieved[:method.k])
            decode = answerer(config, LampSplit(t, []), generator)
            start = time.perf_counter()
            out.raw = decode([prompt], [adapter], [key])[0]
            out.seconds = time.perf_counter() - start
        out.answer = clean_answer(t, out.raw)
        return out

    # --- a visitor's own adapter ----------------------------------------------------------------------
    def make_adapter(self, task: str, upload: str | None, query: str | None, visitor: Visitor, k: float | None = 0,
                     progress: Callable[[float, str], None] = lambda fraction, desc: None) -> MadeAdapter:
        """Train ``visitor``'s adapters on their upload for every setting the columns of ``k`` need
        (:func:`oppu_hub.compare_make.make_adapter`)."""
        if self.signs_in and visitor.name is None:
            raise SpaceError("sign in with Hugging Face first: your adapter is trained for you and pushed to a "
                             "private repo of yours")
        t = task_of(task)
        return make_adapter(self, t, upload, query, visitor, self.check_k(t.name, k), progress)

    def sample_history(self, task: str) -> tuple[Path, str] | None:
        """A history file to try *Make my adapter* with, and a query for it (:func:`compare_make.sample_history`)."""
        pick = self.default_query(task)
        if pick is None:
            return None
        user, qid = pick
        t = get_task(task)
        return sample_history(t, self.split(task).user_history(user), self.question(task, user, qid),
                              self.config.max_items, self.work / "samples")

    def my_adapters(self, visitor: Visitor) -> list[Any]:
        """The visitor's own adapter repos (every task): those :meth:`delete_mine` deletes."""
        try:
            return self.own_store(visitor).list(user_id=visitor.name)
        except StoreError as e:
            raise SpaceError(f"cannot list your adapters on the Hub: {e}") from e

    def delete_mine(self, visitor: Visitor) -> list[str]:
        """Delete the visitor's adapter repos with all their revisions and this machine's downloads of them, as
        ``oppu-hub delete`` does; returns the deleted repo ids."""
        try:
            return forget_user(visitor.name, store=self.own_store(visitor)).repos
        except StoreError as e:
            raise SpaceError(f"cannot delete your adapters: {e}") from e


__all__ = ["Backend"]
