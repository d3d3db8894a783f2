"""The LaMP metrics as a local ``evaluate`` module: ``evaluate.load(str(PATH), "LaMP-2N")`` (see docs/metrics.md).

:mod:`.core` is the implementation; ``lamp_metric.py`` wraps it as an ``evaluate.Metric`` with one config per task.
"""

from pathlib import Path

PATH = Path(__file__).parent  # the folder ``evaluate.load`` takes (and that is pushed as a metric Space)
