"""What every analysis shares (``oppu-hub analyze NAME``): its config (an output folder on top of the pipeline's
settings) and how a result is written: ``{out_dir}/{name}.png`` and the table as Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .evaluation import PipelineConfig
from .io import write_json
from .tasks import get_task


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


# --- writing -----------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_result(config: AnalysisConfig, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
                 figure: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save the figure as ``{name}.png`` and the table as Markdown, CSV and JSON; returns what was written."""
    import matplotlib.pyplot as plt

    out = config.output()
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)
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


def figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def grouped_bars(ax: Any, groups: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, title: str) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=label)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def headline(task_name: str) -> str:
    return get_task(task_name).metric_names[0]
