"""The leaderboard table (the paper's Table 2 layout) from :meth:`oppu_hub.pipeline.Pipeline.run`'s result rows:
:func:`build_table`, its Markdown and CSV forms, and :func:`write_table` (torch-free)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import read_predictions
from .io import read_json, write_json
from .methods import Method, parse_method
from .stats import LEVEL, Interval, PairedBootstrap
from .tasks import TASKS, get_task


def build_table(rows: Sequence[dict[str, Any]], *, references: Sequence[str] | None = None, resamples: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """Table 2's layout from the result rows of :meth:`~oppu_hub.pipeline.Pipeline.run` (``task``, ``method``,
    ``scores`` and the ``predictions`` / ``golds`` / ``query_users`` files it wrote).

    One column per method in the paper's order (baselines first); two rows per task (its two metrics), each with
    the evaluated queries and users (``n``), the best method(s) (lower is better for MAE and RMSE) and, under
    ``deltas[reference][method]``, the method's difference to each reference (``references``, default ``np-k0``
    and the RAG method with the smallest k; those not run are left out) with a paired bootstrap confidence interval
    over users (:class:`PairedBootstrap`: ``resamples`` draws, ``seed``); ``significant`` says the interval excludes
    0 on the better side.
    """
    methods = sorted({parse_method(r["method"]) for r in rows}, key=Method.sort_key)
    names = [m.name for m in methods]
    if references is None:
        rag = next((m.name for m in methods if m.family == "rag"), None)  # methods are sorted: the smallest k
        references = ("np-k0", rag)
    references = [ref for ref in dict.fromkeys(references) if ref in names]
    tasks = sorted({r["task"] for r in rows}, key=lambda t: list(TASKS).index(get_task(t).name))
    table_rows = []
    for name in tasks:
        task = get_task(name)
        by_method = {r["method"]: r for r in rows if r["task"] == name}
        first = next(iter(by_method.values()))
        boot = PairedBootstrap(task, read_predictions(first["golds"]), read_json(first["query_users"]), resamples, seed)
        sums = {m: boot.user_sums(read_predictions(r["predictions"])) for m, r in by_method.items()}
        intervals = {ref: {m: boot.compare(s, sums[ref]) for m, s in sums.items() if m != ref}
                     for ref in references if ref in sums}
        for metric in task.metric_names:
            scores = {m.name: by_method[m.name]["scores"][metric] for m in methods if m.name in by_method}
            values = {m: round(v, 4) for m, v in scores.items()}
            target = max(values.values()) if task.higher_is_better else min(values.values())
            deltas = {ref: {m: _delta(iv[metric], task.higher_is_better) for m, iv in per.items()}
                      for ref, per in intervals.items()}
            table_rows.append({"task": name, "metric": metric, "higher_is_better": task.higher_is_better,
                               "n": {"queries": boot.n_queries, "users": boot.n_users}, "scores": scores,
                               "best": [m for m, v in values.items() if v == target], "deltas": deltas})
    columns = [{"method": m.name, "group": m.group, "label": m.label} for m in methods]
    return {"columns": columns, "references": references,
            "bootstrap": {"resamples": resamples, "seed": seed, "level": LEVEL, "unit": "user"}, "rows": table_rows}


def _delta(interval: Interval, higher_is_better: bool) -> dict[str, Any]:
    return {"diff": interval.diff, "low": interval.low, "high": interval.high,
            "significant": interval.significant(higher_is_better)}


def _header(col: dict[str, str]) -> str:
    return f"{col['group']} {col['label']}"


def _delta_text(delta: dict[str, Any] | None) -> str:
    if delta is None:
        return ""
    text = f"{delta['diff']:+.3f}"
    if delta["low"] is not None:
        text += f" [{delta['low']:+.3f}, {delta['high']:+.3f}]"
    return f"**{text}**" if delta["significant"] else text


def format_markdown(table: dict[str, Any]) -> str:
    """The table in Markdown: per metric a score row (best in italics; ↑/↓ says which way is better, "–": not run
    or not defined) and one "Δ vs reference" row per reference with the 95% CIs, a significant gain in bold."""
    if not table["rows"]:
        return f"No task has finished rows under these settings; not run: {', '.join(table.get('not_run', []))}."
    cols = table["columns"]
    lines = ["| task | metric | n (queries / users) | " + " | ".join(_header(c) for c in cols) + " |",
             "|---|---|---:|" + "---:|" * len(cols)]
    for row in table["rows"]:
        cells = []
        for c in cols:
            v = row["scores"].get(c["method"])
            text = "–" if v is None else f"{v:.3f}"
            cells.append(f"_{text}_" if c["method"] in row["best"] else text)
        arrow = "↑" if row["higher_is_better"] else "↓"
        n = f"{row['n']['queries']} / {row['n']['users']}"
        lines.append(f"| {row['task']} | {row['metric']} {arrow} | {n} | " + " | ".join(cells) + " |")
        for ref, deltas in row["deltas"].items():
            cells = [_delta_text(deltas.get(c["method"])) if c["method"] in row["scores"] else "–" for c in cols]
            lines.append(f"|  | Δ vs {ref} |  | " + " | ".join(cells) + " |")
    if table.get("not_run"):
        lines += ["", f"Not run under these settings: {', '.join(table['not_run'])}."]
    boot = table["bootstrap"]
    lines += ["", f"Δ: difference to the reference on the same queries, with a {boot['level']:.0%} paired bootstrap "
                  f"interval over users ({boot['resamples']} resamples, seed {boot['seed']}); **bold**: the interval "
                  f"excludes 0 on the better side (a significant gain); _italics_: the best score of the row."]
    return "\n".join(lines)


def format_csv(table: dict[str, Any]) -> str:
    """The table as CSV: task, metric, higher_is_better, n_queries, n_users, quantity (``score``, then ``diff``,
    ``low`` and ``high`` ``vs`` each reference), one column per method, and ``best`` (on score lines)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "metric", "higher_is_better", "n_queries", "n_users", "quantity",
                     *(c["method"] for c in table["columns"]), "best"])
    for row in table["rows"]:
        head = [row["task"], row["metric"], row["higher_is_better"], row["n"]["queries"], row["n"]["users"]]
        writer.writerow([*head, "score", *(_number(row["scores"].get(c["method"])) for c in table["columns"]),
                         " ".join(row["best"])])
        for ref, deltas in row["deltas"].items():
            for part in ("diff", "low", "high"):
                writer.writerow([*head, f"{part} vs {ref}",
                                 *(_number(deltas.get(c["method"], {}).get(part)) for c in table["columns"]), ""])
    return buf.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def write_table(table: dict[str, Any], out_dir: str | Path, stem: str = "leaderboard",
                meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``{stem}.md``, ``{stem}.csv`` and ``{stem}.json`` (the table plus ``meta``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
    paths["md"].write_text(format_markdown(table) + "\n", encoding="utf-8")
    paths["csv"].write_text(format_csv(table), encoding="utf-8")
    write_json(paths["json"], {**table, "meta": meta or {}})
    return paths


__all__ = ["build_table", "format_csv", "format_markdown", "write_table"]
