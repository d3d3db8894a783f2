"""Scale-out on Ray: ``train-users --ray`` and ``predict --ray`` over many machines.

The work is embarrassingly parallel per user, so there is no scheduler here: Ray places a pool of actors (one per
worker slot, each with the base loaded once) and the driver hands each idle actor the next user. For
``train-users`` the pool is one more executor of :func:`trainers.runs.train_users` (:class:`RayExecutor`): the
driver keeps the loop, ``run.json``, the progress bar and the pushes; each actor trains its user with the
single-machine executor the config asks for (:func:`trainers.runs.local_executor`), so the adapters are the same
and keep its semantics: written atomically into ``output_dir`` (which must be shared storage), finished users
skipped on re-runs, an interrupted user resumed from its epoch checkpoint. ``predict`` actors run
:func:`oppu_hub.inference.predict` on groups of users.

A worker that dies mid-user (process killed, node lost) leaves no partial adapter: the driver puts the user back at
the head of the queue for the next free actor (up to ``max_retries`` times, then it is recorded as failed in
``run.json``) and replaces the dead actor with a fresh one that Ray places wherever resources are free.

Ray is imported only here and only when ``--ray`` is given (``pip install 'oppu-hub[ray]'``). The options are in
:mod:`oppu_hub.distributed_config` (torch-free, for command registration); this module loads torch and the trainers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import time
import warnings
from collections import Counter, deque
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import datasets
import torch
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from trainers.runs import Outcome, Workspace, local_executor, train_users

from .data import LampSplit, load_task_split
from .distributed_config import RayOptions
from .inference import Generator, adapter_folders, predict
from .models import BaseModelConfig, load_base

if TYPE_CHECKING:
    from trainers.runs import Emit, UserRunReport
    from trainers.user_config import UserAdapterConfig

    from .predict_config import PredictConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- workers


def _quiet_worker(threads: int) -> None:
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"  # the driver's bar counts users; per-worker step bars would interleave
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(max(1, threads))


class UserTrainWorker:
    """A Ray actor body: the base loaded once (:class:`trainers.runs.Workspace`), then the config's local executor
    for user after user."""

    def __init__(self, config: UserAdapterConfig, threads: int = 1) -> None:
        self.init_error: str | None = None
        try:
            _quiet_worker(threads)
            self.workspace = Workspace.load(config)
            self.executor = local_executor(config)
        except Exception as e:  # reported by ready(): the driver drops this worker
            self.init_error = f"{type(e).__name__}: {e}"

    def ready(self) -> str | None:
        return self.init_error

    def run(self, user_id: str) -> dict[str, Any]:
        if self.init_error:
            return {"outcome": "failed", "seconds": 0.0, "error": f"RuntimeError: worker could not start: "
                                                                   f"{self.init_error}"}
        outcomes: list[Any] = []
        self.executor.train(self.workspace, [user_id], outcomes.append)
        return {**dataclasses.asdict(outcomes[0]), "host": socket.gethostname(), "pid": os.getpid()}


class PredictWorker:
    """A Ray actor body: one :class:`~oppu_hub.inference.Generator`, predicting a group of users per call."""

    def __init__(self, config: PredictConfig, threads: int = 1) -> None:
        self.config = config
        self.init_error: str | None = None
        try:
            _quiet_worker(threads)
            self.generator = Generator(*load_base(BaseModelConfig(config.base_dir)), max_adapters=config.max_adapters)
        except Exception as e:
            self.init_error = f"{type(e).__name__}: {e}"

    def ready(self) -> str | None:
        return self.init_error

    def run(self, users: list[str]) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            if self.init_error:
                raise RuntimeError(f"worker could not start: {self.init_error}")
            config = dataclasses.replace(self.config, users=list(users), max_users=None)
            result: dict[str, Any] = {"outcome": "done", "predictions": predict(config, self.generator)}
        except Exception as e:
            result = {"outcome": "failed", "error": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.perf_counter() - start, 2)
        return result


# ---------------------------------------------------------------------------------------------- the actor pool


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """The ``ray`` module, connected per ``options.ray``; an existing connection (``ray.init`` by the caller) is
    reused and left open, one made here is shut down on exit."""
    try:
        import ray  # optional: oppu-hub[ray]
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'oppu-hub[ray]'") from None
    started = False
    if not ray.is_initialized():
        address = options.ray or None
        kwargs: dict[str, Any] = {"configure_logging": False, "log_to_driver": True}
        if address in (None, "local"):
            kwargs["include_dashboard"] = False  # only used when a local instance gets started
        ray.init(address=address, **kwargs)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def worker_count(ray: Any, options: RayOptions, n_items: int) -> tuple[int, float]:
    """(actors to start, GPUs per actor): ``num_workers`` capped to what the cluster's resources fit now."""
    resources = ray.cluster_resources()
    gpus = options.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    fit = int(resources.get("CPU", 0) // options.cpus_per_worker) if options.cpus_per_worker > 0 else n_items
    if gpus > 0:
        fit = min(fit, int(resources.get("GPU", 0) // gpus))
    if fit < 1:
        raise ValueError(f"the Ray cluster ({resources.get('CPU', 0)} CPUs, {resources.get('GPU', 0)} GPUs) cannot "
                         f"fit one worker of {options.cpus_per_worker} CPUs and {gpus} GPUs")
    wanted = options.num_workers or fit
    if wanted > fit:
        logger.warning("the Ray cluster fits %d workers, not %d", fit, wanted)
    return max(1, min(wanted, fit, n_items)), gpus


def pool_map(ray: Any, worker_cls: type, init_args: tuple[Any, ...], items: Mapping[Hashable, Any],
             options: RayOptions, workers: int, gpus: float) -> Iterator[tuple[Hashable, dict[str, Any]]]:
    """Run ``worker.run(items[key])`` for every key on a pool of ``workers`` actors, one key in flight per actor;
    yields ``(key, result)`` as results arrive.

    An actor that dies (its process killed, its node lost) is replaced by a fresh one, which Ray places wherever
    the resources are, up to ``options.max_retries`` times per pool slot; the key it was running goes back to the
    head of the queue for the next free actor, up to ``options.max_retries`` times, then is yielded as failed. An
    actor whose base cannot load (``ready()`` returns the error) is dropped; if none can, ``RuntimeError``.
    """
    from ray.exceptions import RayActorError  # optional: oppu-hub[ray]

    remote = ray.remote(worker_cls).options(
        num_cpus=options.cpus_per_worker, num_gpus=gpus, max_restarts=0, max_task_retries=0)
    actors: dict[int, Any] = {}
    inflight: dict[Any, tuple[int, Hashable | None]] = {}  # ref -> (pool slot, key; None for a ready() probe)
    pending: deque[Hashable] = deque(items)
    attempts: Counter[Hashable] = Counter()
    deaths: Counter[int] = Counter()
    errors: list[str] = []
    started = 0

    def spawn(i: int) -> None:
        actors[i] = remote.remote(*init_args)
        inflight[actors[i].ready.remote()] = (i, None)

    idle: set[int] = set()

    def submit(i: int) -> None:
        if pending:
            key = pending.popleft()
            inflight[actors[i].run.remote(items[key])] = (i, key)
            idle.discard(i)
        else:
            idle.add(i)

    for i in range(workers):
        spawn(i)
    try:
        # Stop when no work is left in flight: a replacement actor that cannot be placed must not hang the run.
        while inflight and (pending or any(key is not None for _, key in inflight.values())):
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            i, key = inflight.pop(ref)
            try:
                value = ray.get(ref)
            except RayActorError as e:
                deaths[i] += 1
                errors.append(f"WorkerDied: {type(e).__name__}")
                logger.warning("Ray worker %d died%s: %s", i, f" while on {key}" if key is not None else "", e)
                if key is not None:
                    attempts[key] += 1
                    if attempts[key] > options.max_retries:
                        yield key, {"outcome": "failed", "seconds": 0.0,
                                    "error": f"WorkerDied: its Ray worker died {attempts[key]} times"}
                    else:
                        pending.appendleft(key)  # an idle actor, else the next one to finish, takes it
                        for j in list(idle)[:1]:
                            submit(j)
                ray.kill(actors.pop(i))
                idle.discard(i)
                if deaths[i] <= options.max_retries:
                    spawn(i)
            else:
                if key is not None:
                    yield key, value
                    submit(i)
                elif value:  # ready() reported that the base could not load
                    errors.append(value)
                    logger.warning("Ray worker %d could not start: %s", i, value)
                    ray.kill(actors.pop(i))
                    idle.discard(i)
                else:
                    started += 1
                    submit(i)
            if not actors:
                break
        if pending:
            reason = errors[-1] if errors else "no worker"
            if not started:
                raise RuntimeError(f"no Ray worker could start: {reason}")
            for key in list(pending):
                yield key, {"outcome": "failed", "seconds": 0.0, "error": f"NoWorkerLeft: {reason}"}
    finally:
        for actor in actors.values():
            ray.kill(actor)


# ---------------------------------------------------------------------------------------------- the commands


@dataclass
class RayExecutor:
    """The Ray actor pool as an executor of :func:`trainers.runs.train_users`: :func:`pool_map` over
    :class:`UserTrainWorker` actors, one user in flight per actor (Ray is joined only when there are users)."""

    options: RayOptions

    def run(self, config: UserAdapterConfig, split: LampSplit, users: Sequence[str], emit: Emit) -> None:
        with ray_session(self.options) as ray:
            workers, gpus = worker_count(ray, self.options, len(users))
            logger.info("train-users on %d Ray workers", workers)
            threads = max(1, int(self.options.cpus_per_worker))
            for user, result in pool_map(ray, UserTrainWorker, (config, threads), {u: u for u in users},
                                         self.options, workers, gpus):
                emit(Outcome(str(user), result["outcome"], result["seconds"], result.get("steps", 0),
                             result.get("error"), result.get("note")))


def train_users_on_ray(config: UserAdapterConfig, options: RayOptions) -> UserRunReport:
    """:func:`trainers.runs.train_users` on a Ray cluster: same adapters, same ``run.json`` and report."""
    return train_users(config, executor=RayExecutor(options))


def predict_on_ray(config: PredictConfig, options: RayOptions) -> dict[str, str]:
    """:func:`oppu_hub.inference.predict` on a Ray cluster, groups of users per actor: the same
    ``{question id: answer}``."""
    split = load_task_split(config.data_dir, config.task, config.split)
    users = split.select_users(config.users, config.max_users)
    if config.adapters_dir:
        adapter_folders(config, users)  # fail before starting any worker
    results: dict[int, dict[str, str]] = {}
    failed: dict[int, str] = {}
    with ray_session(options) as ray:
        workers, gpus = worker_count(ray, options, len(users))
        size = max(1, min(config.max_adapters, math.ceil(len(users) / workers)))
        groups = {n: users[start:start + size] for n, start in enumerate(range(0, len(users), size))}
        threads = max(1, int(options.cpus_per_worker))
        with tqdm(total=len(users), unit="user", desc=f"predict --ray {config.task}") as bar:
            for n, result in pool_map(ray, PredictWorker, (config, threads), groups, options, workers, gpus):
                if result["outcome"] == "failed":
                    failed[n] = result["error"]
                else:
                    results[n] = result["predictions"]
                bar.update(len(groups[n]))
    if failed:
        n, error = next(iter(failed.items()))
        raise RuntimeError(f"prediction failed for {sum(len(groups[g]) for g in failed)} users "
                           f"(e.g. {groups[n][:3]}): {error}")
    return {q: p for n in sorted(results) for q, p in results[n].items()}
