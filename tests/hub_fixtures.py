"""Fixtures that run the test Hub (:mod:`hub_server`) and point the real ``huggingface_hub`` client at it.

Use them from a test module with ``pytest_plugins = ("hub_fixtures",)``.

``huggingface_hub`` reads ``HF_ENDPOINT``/``HF_HOME`` once at import (transformers imported it long before the
tests run), so ``hub_env`` patches the resolved constants and the module-level ``HfApi`` as well as the
environment; subprocesses (``hf``) get the environment from ``hub_env.env()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub_server import ALICE, FakeHub


@dataclass
class HubEnv:
    hub: FakeHub
    home: Path

    @property
    def url(self) -> str:
        return self.hub.url

    def env(self, token: str | None = ALICE) -> dict[str, str]:
        """Environment for a subprocess using this hub (no token when ``token`` is None)."""
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        env.update(HF_ENDPOINT=self.url, HF_HOME=str(self.home), HF_HUB_DISABLE_UPDATE_CHECK="1",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", NO_COLOR="1")
        if token:
            env["HF_TOKEN"] = token
        return env


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A fresh in-memory Hub on a free port of 127.0.0.1."""
    with FakeHub() as hub:
        yield hub


@pytest.fixture
def hub_env(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubEnv:
    """The client pointed at ``fake_hub`` with a private HF_HOME and alice's token in ``HF_TOKEN``."""
    from huggingface_hub import constants, hf_api

    home = tmp_path / "hf_home"
    home.mkdir()
    for name, value in {
        "ENDPOINT": fake_hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": fake_hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
    }.items():
        monkeypatch.setattr(constants, name, value)
    # huggingface_hub's module-level helpers (file_exists, model_info...) are methods of an HfApi made at import.
    monkeypatch.setattr(hf_api.api, "endpoint", fake_hub.url)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_TOKEN", ALICE)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("OPPU_HUB_STORE", raising=False)
    monkeypatch.delenv("OPPU_HUB_HASH_USER_IDS", raising=False)
    monkeypatch.delenv("OPPU_HUB_USER_SALT", raising=False)
    monkeypatch.delenv("OPPU_HUB_TIMEOUT", raising=False)
    return HubEnv(fake_hub, home)
