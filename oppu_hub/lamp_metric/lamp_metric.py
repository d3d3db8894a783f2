"""LaMP metrics as an ``evaluate`` metric: one config per task, the semantics of LaMP's official evaluation.

Load it with ``evaluate.load("path/to/lamp_metric", "LaMP-2N")`` (offline) or, once pushed, with
``evaluate.load("<user>/lamp_metric", "LaMP-2N")``. The computation is ``core.py``, which oppu-hub's own scoring
uses too.
"""

from __future__ import annotations

import datasets
import evaluate

from .core import TASKS, compute

_DESCRIPTION = """\
The metrics of the LaMP personalization benchmark, computed as LaMP's official eval/evaluation.py does:
accuracy and macro-F1 over the task's label list (LaMP-1, LaMP-2N, LaMP-2M; a prediction that is not a label is
wrong), MAE and RMSE (LaMP-3; a prediction that is not a number counts as the rating farthest from the gold),
ROUGE-1 and ROUGE-L F-measure (LaMP-4, LaMP-5, LaMP-7; the mean over examples).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the model's answers (a label, a rating or a text).
    references (list of str): the gold outputs, in the same order.
Returns:
    LaMP-1/2N/2M: {"accuracy", "f1"}; LaMP-3: {"mae", "rmse"} (lower is better); LaMP-4/5/7: {"rouge-1", "rouge-l"}.
Examples:
    >>> metric = evaluate.load("lamp_metric", "LaMP-3")
    >>> metric.compute(predictions=["4", "none"], references=["5", "2"])
    {'mae': 2.0, 'rmse': 2.23606797749979}
"""

_CITATION = """\
@article{salemi2023lamp,
  title={LaMP: When Large Language Models Meet Personalization},
  author={Salemi, Alireza and Mysore, Sheshera and Bendersky, Michael and Zamani, Hamed},
  journal={arXiv preprint arXiv:2304.11406},
  year={2023}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LampMetric(evaluate.Metric):
    """The LaMP metrics; ``config_name`` is the task (``LaMP-1`` ... ``LaMP-7``)."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in TASKS:
            raise KeyError(f"unknown LaMP task config {self.config_name!r}; expected one of {list(TASKS)}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            reference_urls=["https://github.com/LaMP-Benchmark/LaMP/blob/main/eval/evaluation.py"],
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        kind, labels = TASKS[self.config_name]
        return compute(kind, predictions, references, labels)
