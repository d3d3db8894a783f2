"""``oppu-hub predict``: LaMP-format predictions for one method, with scores when golds are known."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from ..data import check_output_path
from ..distributed_config import RayOptions
from ..predict_config import PredictConfig
from . import add_command, config_from_args


@dataclass
class OutputOptions:
    """Whether ``--output`` may replace an existing file (never one of the data's own files)."""

    overwrite: bool = field(default=False, metadata={
        "help": "replace an existing --output file (an input file of --data_dir is refused even so)"})


def register(subparsers: Any) -> None:
    add_command(subparsers, "predict", _predict,
                "predict the queries of a split with the base, retrieval, profile and/or users' adapters",
                PredictConfig, RayOptions, OutputOptions)


def _predict(args: argparse.Namespace) -> int:
    from ..distributed import predict_on_ray  # here: torch, kept out of `oppu-hub --help`
    from ..inference import predict, save_predictions  # as predict_on_ray

    config = config_from_args(PredictConfig, args)
    if config.output:  # refused before any model is loaded
        check_output_path(config.output, config.data_dir, config.task,
                          overwrite=config_from_args(OutputOptions, args).overwrite)
    ray_options = config_from_args(RayOptions, args)
    predictions = predict_on_ray(config, ray_options) if ray_options.enabled else predict(config)
    path, scores = save_predictions(config, predictions)
    print(f"{len(predictions)} predictions written to {path}")
    if scores:
        print("  ".join(f"{name}={value:.4f}" for name, value in scores.items()))
    return 0
