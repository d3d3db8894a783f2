"""How an analysis result is written (``oppu-hub analyze NAME``): ``{out_dir}/{name}.png`` and the table as
Markdown, CSV and JSON, and the plotting helpers the analyses share (its config:
:class:`oppu_hub.analyses_config.AnalysisConfig`)."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .analyses_config import AnalysisConfig
from .io import write_json
from .tasks import get_task


# --- writing -----------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def write_result(config: AnalysisConfig, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
                 figure: Figure, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save the figure as ``{name}.png`` and the table as Markdown, CSV and JSON; returns what was written."""
    out = config.output()
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    md = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                    *("| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows)])
    (out / f"{name}.md").write_text(md + "\n", encoding="utf-8")
    with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    write_json(out / f"{name}.json", {"header": list(header), "rows": [list(r) for r in rows], **(extra or {}),
                                      "config": dataclasses.asdict(config)})
    return {"png": png, "table": out / f"{name}.md", "csv": out / f"{name}.csv", "markdown": md, "rows": rows}


def figure(ncols: int = 1, width: float = 6.0, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    """A figure of ``ncols`` plots side by side (drawn off-screen: no pyplot, no GUI backend) and their axes."""
    fig = Figure(figsize=(width * ncols, height))
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def grouped_bars(ax: Axes, groups: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, title: str) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=label)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def headline(task_name: str) -> str:
    return get_task(task_name).metric_names[0]
