"""``oppu-hub train-base``, ``oppu-hub train-users``, ``oppu-hub train-collective`` and ``oppu-hub profiles``."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from trainers.base_config import BaseTaskConfig
from trainers.collective_config import CollectiveConfig
from trainers.user_config import UserAdapterConfig

from ..data import load_task_split
from ..distributed_config import RayOptions
from ..profiles import ProfileConfig, generate_profiles
from ..tasks import UnknownTaskError, get_task
from ..tuned import user_settings
from . import add_command, config_from_args


def register(subparsers: Any) -> None:
    add_command(subparsers, "train-base", _train_base,
                "task-adapt the base model on the training users (LoRA, merged into a model folder)", BaseTaskConfig)
    users = add_command(subparsers, "train-users", _train_users,
                        "train one PEFT adapter per user on their history (skips finished users, resumes); the "
                        "learning rate, epochs, target modules, rank and alpha default to --task's dev-tuned values",
                        UserAdapterConfig, RayOptions)
    follow_task_defaults(users, UserAdapterConfig.task)
    collective = add_command(
        subparsers, "train-collective", _train_collective,
        "two-stage personalization, stage A: a LoRA on many users' history items (the examples user adapters train "
        "on) over a task-adapted base, merged into a new base for train-users (stage B). --users train (default): "
        "every training user's history, minus items that are --split queries; no evaluated user's data. --users "
        "pooled: the --split users' histories (the pooled control's data; their items shape a model every user "
        "shares). Learning rate, epochs, target modules, rank and alpha default to --task's dev-tuned user-adapter "
        "values; at most --max_examples (3000) examples", CollectiveConfig)
    follow_task_defaults(collective, CollectiveConfig.task)
    add_command(subparsers, "profiles", _profiles,
                "write each user's textual profile with an instruction-following LM (cached)", ProfileConfig)


def follow_task_defaults(parser: argparse.ArgumentParser, default_task: str) -> None:
    """Make ``parser``'s user-adapter defaults (and so its ``--help``) those :func:`oppu_hub.tuned.user_settings`
    resolves for the ``--task`` (and ``--lora_r``) on the command line, before the flags given are parsed."""
    parse_known_args = parser.parse_known_args
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--task", default=default_task)
    first.add_argument("--lora_r", "--lora-r", type=int, default=None)

    def with_task_defaults(args: Any = None, namespace: Any = None) -> Any:
        known, _ = first.parse_known_args(args)
        with contextlib.suppress(UnknownTaskError):  # the config reports an unknown task, as for every command
            parser.set_defaults(**user_settings(get_task(known.task).name, lora_r=known.lora_r))
        return parse_known_args(args, namespace)

    parser.parse_known_args = with_task_defaults  # type: ignore[method-assign]


def _train_base(args: argparse.Namespace) -> int:
    from trainers.base import train_base  # at run time: registering the commands needs only the configs, not trl

    folder = train_base(config_from_args(BaseTaskConfig, args))
    print(f"task-adapted base: {folder}")
    return 0


def _train_users(args: argparse.Namespace) -> int:
    from trainers.runs import train_users  # at run time: registering the commands needs only the configs, not trl

    from ..distributed import RayExecutor  # at run time, as train_users

    config = config_from_args(UserAdapterConfig, args)
    ray_options = config_from_args(RayOptions, args)
    report = train_users(config, executor=RayExecutor(ray_options) if ray_options.enabled else None)
    print(f"adapters in {config.adapters_dir()}: {len(report.trained)} trained, {len(report.updated)} updated, "
          f"{len(report.skipped)} skipped, {len(report.failed)} failed")
    for user, note in report.notes.items():
        print(f"  skipped {user}: {note}")
    for user, error in report.failed.items():
        print(f"  failed {user}: {error}")
    return 1 if report.failed else 0


def _train_collective(args: argparse.Namespace) -> int:
    from trainers.collective import train_collective  # at run time, as train_base

    folder = train_collective(config_from_args(CollectiveConfig, args))
    print(f"collective base: {folder} (train-users --base_dir {folder} trains the personal stage on it)")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    config = config_from_args(ProfileConfig, args)
    users = []
    for split_name in config.splits:
        split = load_task_split(config.data_dir, config.task, split_name)
        users += [(u, split.user_history(u)) for u in split.select_users(None, config.max_users)]
    profiles = generate_profiles(config, users)
    print(f"{len(profiles)} profiles in {config.profiles_dir}/{config.task}")
    return 0
