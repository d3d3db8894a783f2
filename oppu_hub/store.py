"""Where per-user adapters live, opened from a spec: the Hugging Face Hub (:class:`~oppu_hub.hub_store.HubStore`)
or a local folder laid out like it (:class:`~oppu_hub.local_store.LocalStore`), both an
:class:`~oppu_hub.store_base.AdapterStore`.

:func:`parse_store_spec` reads a spec (``hub:NAMESPACE``, ``hf://NAMESPACE``, ``hub``, ``local:FOLDER`` or a
folder), :func:`open_store` opens the store it names and :func:`push_adapter` pushes a finished adapter folder.
Loading an adapter onto a model is :func:`oppu_hub.inference.load_user_adapter`; deleting a user is
:func:`oppu_hub.forget.forget_user`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .default_base import cache_dir
from .hub_store import HubStore
from .local_store import LocalStore
from .store_base import AdapterStore, PushResult

STORE_ENV = "OPPU_HUB_STORE"
HUB_PREFIXES = ("hf://", "hub:", "hf:")  # alone (``hub``, ``hf``): the token's own namespace
LOCAL_PREFIXES = ("local:", "file://")


@dataclass(frozen=True)
class StoreSpec:
    """A parsed store spec: ``kind`` ``hub`` with the Hub ``namespace`` (``None``: the token's user), or ``local``
    with the store folder, ``location``."""

    kind: Literal["hub", "local"]
    location: str | None = None
    namespace: str | None = None


def parse_store_spec(spec: str | os.PathLike[str]) -> StoreSpec:
    """The store ``spec`` names: ``hub:NAMESPACE``, ``hf://NAMESPACE``, ``hf:NAMESPACE`` or ``hub`` / ``hf`` alone
    for the Hub; anything else is a local store's folder (``local:`` or ``file://`` before it is dropped)."""
    text = str(spec)
    for prefix in HUB_PREFIXES:
        if text.startswith(prefix) or text == prefix.rstrip(":/"):
            return StoreSpec("hub", namespace=text[len(prefix):].strip("/") or None)
    for prefix in LOCAL_PREFIXES:
        text = text.removeprefix(prefix)
    return StoreSpec("local", location=text)


def is_store_spec(spec: str | os.PathLike[str]) -> bool:
    """Whether ``spec`` names a store explicitly (a Hub spec, or ``local:`` / ``file://`` before a folder) rather
    than being a plain folder."""
    return parse_store_spec(spec).kind == "hub" or str(spec).startswith(LOCAL_PREFIXES)


def default_store_dir() -> Path:
    """The embedded store used when nothing is configured: ``{oppu-hub cache}/store``."""
    return cache_dir() / "store"


def open_store(spec: str | os.PathLike[str] | AdapterStore | None = None, *, namespace: str | None = None,
               hash_user_ids: bool | None = None, salt: str | None = None, endpoint: str | None = None,
               token: str | None = None, private: bool = True) -> AdapterStore:
    """A store from a spec (:func:`parse_store_spec`): a :class:`HubStore` or a :class:`LocalStore`; ``None`` for
    ``$OPPU_HUB_STORE``, else the local default :func:`default_store_dir`. An explicit ``namespace`` overrides the
    spec's."""
    if isinstance(spec, AdapterStore):
        return spec
    parsed = parse_store_spec(spec or os.environ.get(STORE_ENV) or default_store_dir())
    common = {"hash_user_ids": hash_user_ids, "salt": salt, "private": private}
    if parsed.kind == "hub":
        return HubStore(namespace or parsed.namespace, endpoint=endpoint, token=token, **common)
    return LocalStore(parsed.location, namespace, **common)


def push_adapter(folder: str | Path, store: AdapterStore | str | None = None, **kwargs: Any) -> PushResult:
    """Push one finished adapter folder (the hook ``train-users --push_to_hub`` calls after each user)."""
    return open_store(store).push(folder, **kwargs)
