"""Textual user profiles (the paper's profile-augmented prompts): a short summary of a user's history written
by an instruction-following LM, cached per user and task, deterministic for a seed."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .default_base import DEFAULT_BASE
from .io import private_dir, read_json, safe_name, write_json
from .tasks import Task, get_task

INSTRUCTION = (
    "Here are items from one user's history for the task '{title}'.\n{items}\n\n"
    "In two or three sentences, describe this user's interests, preferences and writing style."
)


class ProfileNotFoundError(FileNotFoundError):
    """No cached profile for a user: generate it with ``oppu-hub profiles``."""


@dataclass
class ProfileConfig:
    """Profile generation (``oppu-hub profiles``).

    Args:
        task / data_dir / split: whose users (all users of the split).
        model: the instruction-following LM that writes profiles (chat template).
        profiles_dir: cache folder (``{profiles_dir}/{task}/{user}.json``, owner-only).
        num_items: history items shown to the LM (a seeded sample).
        item_chars: each item is cut to this many characters.
        max_new_tokens: profile length budget.
        seed: sampling seed for the history items.
        overwrite: regenerate cached profiles.
    """

    task: str = field(default="LaMP-2N", metadata={"help": "LaMP task"})
    data_dir: str = field(default="data", metadata={"help": "LaMP-format data folder"})
    splits: list[str] = field(default_factory=lambda: ["train", "dev", "test"], metadata={"help": "splits"})
    model: str = field(default=DEFAULT_BASE, metadata={"help": "instruction-following LM"})
    profiles_dir: str = field(default="runs/profiles", metadata={"help": "profile cache"})
    num_items: int = field(default=8, metadata={"help": "history items shown to the LM"})
    item_chars: int = field(default=200, metadata={"help": "characters kept per item"})
    max_new_tokens: int = field(default=80, metadata={"help": "profile length in tokens"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    overwrite: bool = field(default=False, metadata={"help": "regenerate cached profiles"})
    max_users: int | None = field(default=None, metadata={"help": "only the first N users of each split"})


class ProfileStore:
    """Read/write access to the cached profiles of one task; the cache is owner-only (0700 folders, 0600 files):
    a profile summarises a user's history."""

    def __init__(self, profiles_dir: str | Path, task: Task | str) -> None:
        self.task = get_task(task)
        self.root = Path(profiles_dir)
        self.folder = self.root / self.task.name

    def path(self, user_id: str) -> Path:
        return self.folder / f"{safe_name(user_id)}.json"

    def has(self, user_id: str) -> bool:
        return self.path(user_id).exists()

    def get(self, user_id: str) -> str:
        path = self.path(user_id)
        if not path.exists():
            raise ProfileNotFoundError(f"no profile for user {user_id!r} of {self.task.name} in {self.folder}; "
                                       f"generate profiles first: oppu-hub profiles --task {self.task.name}")
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("profile"), str):
            raise ValueError(f"{path}: not a cached profile (expected an object with a 'profile' text)")
        return data["profile"]

    def put(self, user_id: str, profile: str, meta: Mapping[str, Any]) -> Path:
        private_dir(self.root)
        private_dir(self.folder)
        return write_json(self.path(user_id), {"user_id": user_id, "profile": profile, **meta})


def profile_prompt(task: Task, history: Sequence[Mapping[str, Any]], config: ProfileConfig, user_id: str) -> str:
    """The instruction that asks the LM for a user's profile, from a seeded sample of their history."""
    rng = random.Random(f"{config.seed}:{user_id}")
    items = list(history) if len(history) <= config.num_items else rng.sample(list(history), config.num_items)
    lines = "\n".join(f"- {task.history_line(i)[: config.item_chars]}" for i in items)
    return INSTRUCTION.format(title=task.title, items=lines)


def generate_profiles(config: ProfileConfig, users: Iterable[tuple[str, Sequence[Mapping[str, Any]]]],
                      model: Any = None, tokenizer: Any = None) -> dict[str, str]:
    """Generate (or read from cache) the profile of each ``(user_id, history)``; greedy, so deterministic."""
    from .models import load_base  # here: keeps this module (ProfileConfig, a CLI config) torch-free

    users = list(users)
    store = ProfileStore(config.profiles_dir, config.task)
    todo = [(u, h) for u, h in users if config.overwrite or not store.has(u)]
    if todo and model is None:
        model, tokenizer = load_base(config.model)
    for user_id, history in tqdm(todo, desc=f"profiles {store.task.name}", unit="user", disable=not todo):
        messages = [{"role": "user", "content": profile_prompt(store.task, history, config, user_id)}]
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True).to(model.device)
        output = model.generate(**inputs, max_new_tokens=config.max_new_tokens, do_sample=False,
                                repetition_penalty=1.2)
        text = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        store.put(user_id, text, {"model": config.model, "seed": config.seed, "num_items": config.num_items})
    return {u: store.get(u) for u, _ in users}
