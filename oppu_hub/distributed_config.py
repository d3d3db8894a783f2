"""How a command runs on a Ray cluster (``--ray``): the options, torch-free for command registration."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RayOptions:
    """Running a command on a Ray cluster (``--ray``).

    Args:
        ray: run on Ray. ``--ray`` alone joins the cluster in ``$RAY_ADDRESS`` or the latest one started on this
            machine (``ray start --head``), else starts a local one; ``--ray HOST:PORT`` joins that cluster,
            ``--ray auto`` requires an existing one, ``--ray local`` always starts a fresh local one.
        num_workers: actors (each with its own copy of the base); default: as many as the cluster's CPUs/GPUs fit.
        cpus_per_worker: CPUs each actor reserves (also its torch threads).
        gpus_per_worker: GPUs each actor reserves (fractions share a GPU); default 1 when the cluster has GPUs,
            else 0.
        max_retries: how often a user is retried after its worker died (and how often a dead actor is replaced).
    """

    ray: str | None = field(default=None, metadata={
        "nargs": "?", "const": "", "help": "run on Ray: --ray (local or $RAY_ADDRESS) or --ray HOST:PORT"})
    num_workers: int | None = field(default=None, metadata={"help": "Ray actors (default: what the cluster fits)"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs per Ray actor (its torch threads too)"})
    gpus_per_worker: float | None = field(default=None, metadata={
        "help": "GPUs per Ray actor (default: 1 when the cluster has GPUs, else 0)"})
    max_retries: int = field(default=2, metadata={"help": "retries of a user whose Ray worker died"})

    @property
    def enabled(self) -> bool:
        return self.ray is not None


__all__ = ["RayOptions"]
