"""``oppu-hub train-base``, ``oppu-hub train-users`` and ``oppu-hub profiles``."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_command, config_from_args


def register(subparsers: Any) -> None:
    from trainers import BaseTaskConfig, UserAdapterConfig

    from ..distributed import RayOptions
    from ..profiles import ProfileConfig

    add_command(subparsers, "train-base", _train_base,
                "task-adapt the base model on the training users (LoRA, merged into a model folder)", BaseTaskConfig)
    add_command(subparsers, "train-users", _train_users,
                "train one PEFT adapter per user on their history (skips finished users, resumes)",
                UserAdapterConfig, RayOptions)
    add_command(subparsers, "profiles", _profiles,
                "write each user's textual profile with an instruction-following LM (cached)", ProfileConfig)


def _train_base(args: argparse.Namespace) -> int:
    from trainers import BaseTaskConfig, train_base

    folder = train_base(config_from_args(BaseTaskConfig, args))
    print(f"task-adapted base: {folder}")
    return 0


def _train_users(args: argparse.Namespace) -> int:
    from trainers import UserAdapterConfig, train_users

    from ..distributed import RayExecutor, RayOptions

    config = config_from_args(UserAdapterConfig, args)
    ray_options = config_from_args(RayOptions, args)
    report = train_users(config, executor=RayExecutor(ray_options) if ray_options.enabled else None)
    print(f"adapters in {config.adapters_dir()}: {len(report.trained)} trained, {len(report.updated)} updated, "
          f"{len(report.skipped)} skipped, {len(report.failed)} failed")
    for user, error in report.failed.items():
        print(f"  failed {user}: {error}")
    return 1 if report.failed else 0


def _profiles(args: argparse.Namespace) -> int:
    from ..data import load_task_split
    from ..profiles import ProfileConfig, generate_profiles

    config = config_from_args(ProfileConfig, args)
    users = []
    for split_name in config.splits:
        split = load_task_split(config.data_dir, config.task, split_name)
        users += [(u, split.user_history(u)) for u in split.select_users(None, config.max_users)]
    profiles = generate_profiles(config, users)
    print(f"{len(profiles)} profiles in {config.profiles_dir}/{config.task}")
    return 0
