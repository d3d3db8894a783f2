"""The eval pipeline for one task (:class:`Pipeline`): plans and, where missing, trains the task-adapted bases, the
users' adapters, the pooled adapter and the collective bases (two-stage methods) a method needs, then predicts and
scores the methods (:mod:`oppu_hub.methods`) on the evaluated users.

Trained artifacts are content-addressed: a base lives in ``{workdir}/base/{hash}/{task}/{variant}`` (a two-stage
method's collective base in ``.../{variant}-collective-{train|pooled}``) and adapters in
``{workdir}/users/{hash}/{task}/...``, where the hash (:func:`config_hash` of :func:`hashable` fields) covers the
training configuration and the training data, so a second run with the same settings trains nothing and a changed
setting never reuses a stale model. Predictions are written in LaMP's official format (with a matching
``golds.json``, and ``users.json`` naming each query's user) and scored from those files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from trainers.base import BASE_RECORD, train_base
from trainers.base_config import BaseTaskConfig
from trainers.collective import train_collective
from trainers.collective_config import CollectiveConfig, CollectiveSource
from trainers.runs import train_users
from trainers.training_config import PeftOptions, TrainingConfig
from trainers.user_config import UserAdapterConfig

from . import protocol
from .adapters import is_complete
from .baselines import POOLED_USER, POOLED_VIEW_VERSION, applies, pooled_split, predict_baseline
from .data import LampSplit, load_task_split, write_predictions, write_split
from .decoding_config import DecodingOptions
from .inference import Generator, load_user_adapter, predict
from .io import read_json, safe_name, write_json
from .methods import Method, parse_method
from .metrics import score
from .models import BaseModelConfig, load_base
from .pipeline_config import PipelineConfig
from .predict_config import PredictConfig
from .profiles import ProfileConfig, ProfileStore, generate_profiles
from .tasks import Task, get_task
from .tuned import TUNED_SETTINGS, user_settings

logger = logging.getLogger(__name__)

# Fields that do not identify a trained artifact: where things are, which users, and how the training is executed
# (``concurrent``: users trained together give the same adapters as users trained alone, up to float summation order).
_UNHASHED = {"output_dir", "overwrite", "logging_steps", "data_dir", "profiles_dir", "users", "max_users",
             "push_to_hub", "hub_store", "update", "base_dir", "concurrent"}


# Fields added after artifacts were cached, with their defaults: hashed only when set, so the folders of artifacts
# trained without them keep their names.
_HASHED_WHEN_SET = {"load_in_4bit": False}


def without_unset(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` (a training config as a dict) without those of :data:`_HASHED_WHEN_SET` at their defaults: a
    record written before such a field existed compares equal to today's config."""
    return {k: v for k, v in fields.items() if not (k in _HASHED_WHEN_SET and v == _HASHED_WHEN_SET[k])}


def hashable(cfg: Any) -> dict[str, Any]:
    """The fields of a training config that identify what it trains (all but :data:`_UNHASHED`, and the fields of
    :data:`_HASHED_WHEN_SET` at their defaults)."""
    return without_unset({k: v for k, v in dataclasses.asdict(cfg).items() if k not in _UNHASHED})


def config_hash(obj: Any, n: int = 12) -> str:
    """A short stable hash of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def file_hash(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


HistoryFilter = Callable[[LampSplit], LampSplit]
StageConfig = TypeVar("StageConfig", BaseTaskConfig, UserAdapterConfig)


class Pipeline:
    """Train-or-reuse and predict for one task.

    Args:
        config: the pipeline settings.
        task: the task.
        history_filter: optionally rewrites the evaluated split's histories (e.g. keep only least relevant
            items); ``history_tag`` names it, so adapters trained on filtered histories get their own folder.
        on_train: called with ``("base"|"users", folder)`` whenever something is actually trained.
    """

    def __init__(self, config: PipelineConfig, task: str | Task, history_filter: HistoryFilter | None = None,
                 history_tag: str = "", on_train: Callable[[str, Path], None] | None = None) -> None:
        self.config = config
        self.task = get_task(task)
        self.work = Path(config.workdir)
        self.history_filter = history_filter
        self.history_tag = history_tag
        self.on_train = on_train
        self._view: Path | None = None
        self._eval_split: LampSplit | None = None
        self._bases: dict[tuple[int, bool], tuple[BaseTaskConfig, dict[str, Any]]] = {}

    # --- data ------------------------------------------------------------------------------------------
    def source_files(self, split: str) -> tuple[Path, Path]:
        folder = Path(self.config.data_dir) / self.task.name
        return folder / f"{split}_questions.json", folder / f"{split}_outputs.json"

    def source_hashes(self) -> list[str]:
        """The hashes of the train split's and the evaluated split's files: the data a result depends on."""
        return [file_hash(*self.source_files(s)) for s in ("train", self.config.split)]

    def data_view(self) -> Path:
        """A data folder with the (capped) training users and the (filtered) evaluated split, written once under
        a name derived from its inputs."""
        if self._view is not None:
            return self._view
        c = self.config
        train, evaluated = self.source_hashes()
        key = config_hash({"train": train, "eval": evaluated, "train_users": c.train_users, "split": c.split,
                           "history": self.history_tag})
        view = self.work / "views" / self.task.name / key
        if not (view / self.task.name / f"{c.split}_outputs.json").exists():  # the last file written
            train = load_task_split(c.data_dir, self.task, "train")
            if c.train_users:
                keep = set(train.user_ids[:c.train_users])
                train = LampSplit(self.task, [q for q in train.questions if q.user_id in keep])
            evaluated = load_task_split(c.data_dir, self.task, c.split)
            if not evaluated.has_golds:
                raise ValueError(f"{evaluated.source}: no gold outputs to score against (official LaMP test golds "
                                 f"are hidden: evaluate --split dev)")
            if self.history_filter is not None:
                evaluated = self.history_filter(evaluated)
            write_split(train, view / self.task.name, "train")
            write_split(evaluated, view / self.task.name, c.split)
        self._view = view
        return view

    def eval_split(self) -> LampSplit:
        if self._eval_split is None:
            self._eval_split = load_task_split(self.data_view(), self.task, self.config.split)
        return self._eval_split

    def users(self) -> list[str]:
        return self.eval_split().select_users(None, self.config.users or None)

    # --- profiles --------------------------------------------------------------------------------------
    def profiles_dir(self) -> Path:
        c = self.config
        return self.work / "profiles" / config_hash({"model": c.base.base_model, "items": c.profile_items,
                                                     "tokens": c.profile_tokens})

    def ensure_profiles(self) -> None:
        """Profiles of the training users (for the PAG base) and of the evaluated users (cached)."""
        c = self.config
        train = load_task_split(self.data_view(), self.task, "train")
        evaluated = self.eval_split()
        users = [(u, train.user_history(u)) for u in train.user_ids]
        users += [(u, evaluated.user_history(u)) for u in self.users()]
        generate_profiles(ProfileConfig(task=self.task.name, model=c.base.base_model,
                                        profiles_dir=str(self.profiles_dir()), num_items=c.profile_items,
                                        max_new_tokens=c.profile_tokens), users)

    def _profiles_hash(self, users: Sequence[str]) -> str:
        store = ProfileStore(self.profiles_dir(), self.task)
        return config_hash([store.get(u) for u in users])

    # --- training --------------------------------------------------------------------------------------
    def _fill(self, template: StageConfig, k: int, profile: bool, **fields: Any) -> StageConfig:
        """A stage's config: ``template`` with what this task and method set (task, data, k, profile...)."""
        return dataclasses.replace(template, **{"task": self.task.name, "data_dir": str(self.data_view()), "k": k,
                                                "profile": profile, "profiles_dir": str(self.profiles_dir()),
                                                **fields})

    def tuned_settings(self) -> dict[str, Any]:
        """The user-adapter settings the config leaves unset (``None``), resolved by
        :func:`oppu_hub.tuned.user_settings`: the task's dev-tuned values, alpha the rank."""
        given = {name: getattr(self.config.user, name) for name in TUNED_SETTINGS}
        return {k: v for k, v in user_settings(self.task.name, **given).items() if given[k] is None}

    def base_config(self, k: int, profile: bool = False) -> tuple[BaseTaskConfig, dict[str, Any]]:
        """The training config of the task-adapted base for prompts with ``k`` items (and profile), and the dict
        whose hash names its folder (``output_dir``: ``{workdir}/base/{hash}``): the config, the training data and
        (PAG) the training users' profiles. Nothing is trained."""
        if (k, profile) not in self._bases:
            epochs = self.config.base.num_train_epochs or protocol.base_epochs(self.task.name)
            cfg = self._fill(self.config.base, k, profile, num_train_epochs=epochs)
            view = self.data_view() / self.task.name
            profiles = None
            if profile:
                profiles = self._profiles_hash(load_task_split(self.data_view(), self.task, "train").user_ids)
            hashed = {**hashable(cfg), "train_data": file_hash(view / "train_questions.json",
                                                                view / "train_outputs.json"), "profiles": profiles}
            root = self.work / "base" / config_hash(hashed)
            self._bases[(k, profile)] = (dataclasses.replace(cfg, output_dir=str(root)), hashed)
        return self._bases[(k, profile)]

    def base_dir(self, k: int, profile: bool = False) -> Path:
        """The task-adapted base of :meth:`base_config`, trained unless it exists."""
        return self._trained_base(*self.base_config(k, profile), train_base)

    def adapters_config(self, k: int, profile: bool = False, peft_type: str | None = None,
                        history_format: str = "full") -> tuple[UserAdapterConfig, dict[str, Any]]:
        """:meth:`_user_config` of the evaluated users' adapters trained with ``k`` (and profile). Nothing is
        trained."""
        c = self.config
        return self._user_config(k, profile, peft_type, history_format, self.data_view(), self.users(),
                                 c.user.max_history, {"eval_data": file_hash(*self.source_files(c.split))})

    def adapters_dir(self, k: int, profile: bool = False, peft_type: str | None = None,
                     history_format: str = "full") -> Path:
        """The evaluated users' adapters of :meth:`adapters_config`, on the matching base; users whose adapter
        exists are skipped, so only missing ones are trained."""
        return self._train_adapters(*self.adapters_config(k, profile, peft_type, history_format))

    def pooled_view(self) -> Path:
        """A data folder whose evaluated split has one user holding all evaluated users' histories (each cut to
        ``max_history``; :func:`oppu_hub.baselines.pooled_split`), written once under a name derived from its
        inputs."""
        c = self.config
        key = config_hash({"view": self.data_view().name, "users": self.users(), "max_history": c.user.max_history,
                           "version": POOLED_VIEW_VERSION})
        view = self.work / "views" / self.task.name / f"pooled-{key}"
        if not (view / self.task.name / f"{c.split}_outputs.json").exists():
            write_split(pooled_split(self.eval_split(), self.users(), c.user.max_history), view / self.task.name,
                        c.split)
        return view

    def pooled_config(self, k: int, peft_type: str | None = None, history_format: str = "full"
                      ) -> tuple[UserAdapterConfig, dict[str, Any]]:
        """:meth:`_user_config` of the ``pooled-k{k}`` adapter (the user ``pooled`` of :meth:`pooled_view`, with
        the settings of ``oppu-k{k}``'s adapters). Nothing is trained."""
        view = self.pooled_view()
        pooled_data = file_hash(view / self.task.name / f"{self.config.split}_questions.json")
        return self._user_config(k, False, peft_type, history_format, view, [POOLED_USER], None,
                                 {"pooled_data": pooled_data})

    def pooled_adapter(self, k: int, peft_type: str | None = None, history_format: str = "full") -> Path:
        """The ``pooled-k{k}`` control of :meth:`pooled_config`: one adapter trained on all evaluated users'
        histories together, on the same base as ``oppu-k{k}``'s adapters."""
        return self._train_adapters(*self.pooled_config(k, peft_type, history_format)) / safe_name(POOLED_USER)

    # --- two-stage: collective then personal ---------------------------------------------------------------
    def collective_config(self, k: int, source: CollectiveSource, history_format: str = "full"
                          ) -> tuple[CollectiveConfig, dict[str, Any]]:
        """The config of the collective base of ``two-stage-k{k}`` (``source`` ``train``: every training user of
        the data view, at most ``--base.max_examples`` examples, items that are evaluated queries left out) or
        ``two-stage-pooled-k{k}`` (``pooled``: the evaluated users' histories, all of them, as the pooled adapter),
        on the base of :meth:`base_config` with the settings of ``oppu-k{k}``'s adapters (as a LoRA), and the dict
        whose hash names its folder (``output_dir``: ``{workdir}/base/{hash}``): the config, the task-adapted
        base's hash, the data and the history filter. Nothing is trained."""
        c = self.config
        base, _ = self.base_config(k)
        user = dataclasses.replace(c.user, **self.tuned_settings())
        shared = {f.name: getattr(user, f.name) for f in (*dataclasses.fields(TrainingConfig),
                                                           *dataclasses.fields(PeftOptions))}
        pooled = source == "pooled"
        cfg = CollectiveConfig(**{**shared, "task": self.task.name, "data_dir": str(self.data_view()), "k": k,
                                  "profile": False, "profiles_dir": str(self.profiles_dir()), "peft_type": "LORA"},
                               base_dir=str(base.target_dir()), users=source, split=c.split,
                               user_ids=self.users() if pooled else None, max_history=c.user.max_history,
                               history_format=history_format, max_examples=None if pooled else c.base.max_examples)
        view = self.data_view() / self.task.name
        data = {"eval_data": file_hash(*self.source_files(c.split))}
        if not pooled:
            data["train_data"] = file_hash(view / "train_questions.json", view / "train_outputs.json")
        hashed = {**hashable(cfg), "users": source, "base": Path(base.output_dir).name, "history": self.history_tag,
                  **data}
        return dataclasses.replace(cfg, output_dir=str(self.work / "base" / config_hash(hashed))), hashed

    def collective_dir(self, k: int, source: CollectiveSource, history_format: str = "full") -> Path:
        """The collective base of :meth:`collective_config`, trained (after its task-adapted base) unless it
        exists."""
        cfg, hashed = self.collective_config(k, source, history_format)
        if not (cfg.target_dir() / BASE_RECORD).exists():
            self.base_dir(k)  # stage A starts from the task-adapted base
        return self._trained_base(cfg, hashed, train_collective)

    def _trained_base(self, cfg: Any, hashed: dict[str, Any], train: Callable[[Any], Any]) -> Path:
        """``cfg``'s base folder (task-adapted or collective), trained by ``train`` unless it exists."""
        target = cfg.target_dir()
        if not (target / BASE_RECORD).exists():
            logger.info("training base %s", target)
            write_json(Path(cfg.output_dir) / "eval_config.json", hashed)
            train(cfg)
            if self.on_train:
                self.on_train("base", target)
        return target

    def two_stage_config(self, k: int, source: CollectiveSource, peft_type: str | None = None,
                         history_format: str = "full") -> tuple[UserAdapterConfig, dict[str, Any]]:
        """:meth:`_user_config` of the evaluated users' adapters of ``two-stage[-pooled]-k{k}``: ``oppu-k{k}``'s,
        on the collective base of :meth:`collective_config`. Nothing is trained."""
        c = self.config
        base = self.collective_config(k, source, history_format)[0].target_dir()
        return self._user_config(k, False, peft_type, history_format, self.data_view(), self.users(),
                                 c.user.max_history, {"eval_data": file_hash(*self.source_files(c.split))}, base)

    def two_stage_adapters(self, k: int, source: CollectiveSource, peft_type: str | None = None,
                           history_format: str = "full") -> Path:
        """The adapters of :meth:`two_stage_config`, on their collective base (trained first when missing)."""
        return self._train_adapters(*self.two_stage_config(k, source, peft_type, history_format),
                                    base=lambda: self.collective_dir(k, source, history_format))

    def artifacts(self, method: str | Method, peft_type: str | None = None, history_format: str = "full",
                  train: bool = False) -> tuple[Path | None, Path | None]:
        """The folders of the base and the adapters (per-user folder, or the pooled adapter) that ``method``
        predicts with (``None`` where it uses none), trained first where missing with ``train`` (else nothing is
        trained). They are named by the hashes of their resolved training configs, tuned defaults included."""
        m = parse_method(method)
        if m.baseline:
            return None, None
        if m.pooled:
            pooled = self.pooled_config(m.k, peft_type, history_format)[0].adapters_dir() / safe_name(POOLED_USER)
            base = self.base_config(m.k, m.profile)[0].target_dir()
            return base, self.pooled_adapter(m.k, peft_type, history_format) if train else pooled
        if m.collective:
            cfg = self.two_stage_config(m.k, m.collective, peft_type, history_format)[0]
            if train:
                self.two_stage_adapters(m.k, m.collective, peft_type, history_format)
            return Path(cfg.base_dir), cfg.adapters_dir()
        base = self.base_dir(m.k, m.profile) if train else self.base_config(m.k, m.profile)[0].target_dir()
        if m.oppu:
            cfg = self.adapters_config(m.k, m.profile, peft_type, history_format)[0]
            return base, self.adapters_dir(m.k, m.profile, peft_type, history_format) if train else cfg.adapters_dir()
        return base, None

    def _user_config(self, k: int, profile: bool, peft_type: str | None, history_format: str, data_dir: Path,
                     users: list[str], max_history: int | None, data: dict[str, str], base: Path | None = None
                     ) -> tuple[UserAdapterConfig, dict[str, Any]]:
        """The config of the adapters of ``users`` of ``data_dir``'s evaluated split on ``base`` (default: the
        base of :meth:`base_config`), and the dict whose hash names their folder (``output_dir``:
        ``{workdir}/users/{hash}``): the config without its execution details, the base's hash, the history filter
        and ``data`` (what identifies the training data)."""
        c = self.config
        base = base or self.base_config(k, profile)[0].target_dir()
        cfg = self._fill(c.user, k, profile, data_dir=str(data_dir), base_dir=str(base), split=c.split, users=users,
                         max_history=max_history, peft_type=peft_type or c.user.peft_type,
                         history_format=history_format, **self.tuned_settings())
        hashed = {**hashable(cfg), "base": base.parent.parent.name, "history": self.history_tag, **data}
        return dataclasses.replace(cfg, output_dir=str(self.work / "users" / config_hash(hashed))), hashed

    def _train_adapters(self, cfg: UserAdapterConfig, hashed: dict[str, Any],
                        base: Callable[[], Path] | None = None) -> Path:
        """Train the missing adapters of ``cfg`` (its base first, when missing: ``base()``, default
        :meth:`base_dir`) and return their folder."""
        (base or (lambda: self.base_dir(cfg.k, cfg.profile)))()
        out = cfg.adapters_dir()
        if all(is_complete(out / safe_name(u)) for u in cfg.users):
            return out
        write_json(Path(cfg.output_dir) / "eval_config.json", hashed)
        start = time.perf_counter()
        report = train_users(cfg)
        if report.failed:
            raise RuntimeError(f"{self.task.name}: adapters failed for {report.failed}")
        # Each user's seconds (its slot's wall time: users trained side by side overlap) and each run's wall time.
        timings_path, runs_path = out / "timings.json", out / "train_runs.json"
        timings = read_json(timings_path) if timings_path.exists() else {}
        done = report.trained + report.updated
        timings.update({u: report.seconds[u] for u in done})
        write_json(timings_path, timings)
        runs = read_json(runs_path) if runs_path.exists() else []
        write_json(runs_path, [*runs, {"users": len(done), "seconds": round(time.perf_counter() - start, 1)}])
        if self.on_train and done:
            self.on_train("users", out)
        return out

    # --- prediction ------------------------------------------------------------------------------------
    def run(self, methods: Sequence[str | Method], out_dir: str | Path, *, peft_type: str | None = None,
            history_format: str = "full", name_suffix: str = "", done: Mapping[str, dict[str, Any]] | None = None,
            on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Predict every method on the evaluated users, one method after another, training first what it needs and
        is missing (the baselines first, then by k, the methods on a base alone before those with adapters, the
        two-stage methods last); write LaMP-format predictions (``{out_dir}/{task}/{method}.json``),
        ``golds.json`` and ``users.json`` (``{question id: user id}``, for the bootstrap); returns one row per
        method with its scores (those of the written file) and ``seconds`` (the training it was first to need, the
        loading and the predicting). A baseline the task does not define (:func:`oppu_hub.baselines.applies`)
        gets no row. Methods in ``done`` (rows by method name, e.g. of a run that stopped) are neither trained
        nor predicted: their rows are returned as given. ``on_row`` gets each new row as soon as it is written."""
        done = dict(done or {})
        methods = [parse_method(m) for m in methods]
        todo = [m for m in methods if m.name + name_suffix not in done]
        if any(m.profile for m in todo):
            self.ensure_profiles()
        users = self.users()
        split = self.eval_split()
        folder = Path(out_dir) / self.task.name
        golds = {q.id: q.gold for u in users for q in split.user_questions(u)}
        write_predictions(self.task, golds, folder / "golds.json")
        write_json(folder / "users.json", {q.id: u for u in users for q in split.user_questions(u)})

        def finish(m: Method, predictions: dict[str, str], start: float, predict_start: float,
                   base: Path | None = None, adapters: Path | None = None) -> None:
            path = write_predictions(self.task, predictions, folder / f"{m.name}{name_suffix}.json")
            now = time.perf_counter()
            row = {"task": self.task.name, "method": m.name + name_suffix,
                   "scores": score(self.task, predictions, golds), "predictions": str(path),
                   "golds": str(folder / "golds.json"), "query_users": str(folder / "users.json"),
                   "base": str(base) if base else None, "adapters": str(adapters) if adapters else None,
                   "predict_seconds": round(now - predict_start, 2), "seconds": round(now - start, 2)}
            done[row["method"]] = row
            if on_row:
                on_row(row)

        baselines = [m for m in todo if m.baseline and applies(m.family, self.task)]
        if baselines:
            train = load_task_split(self.data_view(), self.task, "train")
            for m in baselines:
                start = time.perf_counter()
                finish(m, predict_baseline(m.family, split, users, train), start, start)
        models = [m for m in todo if not m.baseline and not (m.prior and not self.task.labels)]  # prior: labels
        planned = {m.name: self.artifacts(m, peft_type, history_format) for m in models}
        models.sort(key=lambda m: (m.k, bool(m.collective), planned[m.name][1] is not None,
                                   *map(str, planned[m.name])))  # methods sharing a model side by side
        generators: dict[tuple[Path, Path | None], Any] = {}
        for m in models:
            start = time.perf_counter()
            base, adapters = self.artifacts(m, peft_type, history_format, train=True)
            key = (base, adapters)
            if key not in generators:
                generators.clear()  # one model in memory at a time
                model, tokenizer = load_base(BaseModelConfig(str(base)))
                # The pooled adapter is part of the model that every user's queries share.
                generators[key] = Generator(load_user_adapter(model, None, adapters) if m.pooled else model, tokenizer)
            stage = self.config.user if adapters else self.config.base  # whose prompts the model was trained on
            predict_start = time.perf_counter()
            predictions = predict(PredictConfig(
                task=self.task.name, data_dir=str(self.data_view()), split=self.config.split, base_dir=str(base),
                adapters_dir=str(adapters) if m.oppu else None, profiles_dir=str(self.profiles_dir()),
                history_format=history_format, users=users, batch_size=self.config.predict_batch_size,
                max_prompt_length=stage.max_prompt_length, **self.prediction_settings(m)), generators[key])
            finish(m, predictions, start, predict_start, base, adapters)
        generators.clear()
        return [done[m.name + name_suffix] for m in methods if m.name + name_suffix in done]

    def prediction_settings(self, method: Method) -> dict[str, Any]:
        """What ``method`` predicts with besides its model: the config's decoding options and the method's
        prediction settings (:meth:`~oppu_hub.methods.Method.prediction_settings`: k, profile, answers...)."""
        options = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(DecodingOptions)}
        return {**options, **method.prediction_settings(self.config.answers)}


__all__ = ["Pipeline", "config_hash", "file_hash", "hashable"]
