"""The Gradio Space (space/app.py): the /compare API through gradio_client, UI errors, and a real headless
Chromium (Playwright) loading the page, running a comparison and taking a screenshot."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_lamp2n

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
CHROMIUM = os.environ.get("OPPU_HUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def load_space():
    spec = importlib.util.spec_from_file_location("oppu_space_app", REPO / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory, tiny_base):
    """Adapters of two test users (a third test user has none) and the app serving them."""
    from trainers import UserAdapterConfig, train_users

    data = make_lamp2n(tmp_path_factory.mktemp("space-data"), {"train": 2, "test": 3})
    users = tmp_path_factory.mktemp("space-users")
    for k in (0, 2):  # each column's adapters are trained with its prompts: OPPU k=0, OPPU + RAG k=2
        config = UserAdapterConfig(task="LaMP-2N", data_dir=str(data), base_dir=str(tiny_base), k=k,
                                   output_dir=str(users), users=["u2", "u3"],
                                   per_device_train_batch_size=3, logging_steps=1, precision="fp32",
                                   learning_rate=0.02, num_train_epochs=8,
                                   target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
        report = train_users(config)
        assert sorted(report.trained) == ["u2", "u3"] and not report.failed
    module = load_space()
    cfg = module.SpaceConfig(data_dir=str(data), base_dir=str(tiny_base),
                             adapters_dir=str(users / "LaMP-2N" / "{variant}-lora"), task="LaMP-2N", k=2,
                             port=free_port())
    app = module.build_app(cfg)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=cfg.port, prevent_thread_lock=True, quiet=True)
    try:
        yield module, app, f"http://127.0.0.1:{cfg.port}/"
    finally:
        app.close()


def test_compare_api_four_methods(space):
    from gradio_client import Client

    module, app, url = space
    client = Client(url, verbose=False)
    out = client.predict("LaMP-2N", "u2", module.HELD_OUT, "q2", "", 2, api_name="/compare")
    head, answers, latencies, table = out[0], out[1:5], out[5:9], out[9]
    assert "u2" in head and "gold" in head
    assert all(isinstance(a, str) and a and "unavailable" not in a for a in answers)
    assert answers[2] != answers[0], answers  # the adapter changes the answer of the random base
    assert all(x.startswith("latency **") and " s**" in x for x in latencies)
    assert len(table["data"]) == 2 and table["headers"][1] == "BM25 score"
    # a second user: its adapter is loaded into the LRU next to the first, the base is not reloaded
    out = client.predict("LaMP-2N", "u3", module.FREE_TEXT, None, "quantum story about the quantum", 1,
                         api_name="/compare")
    assert out[3] and out[7].startswith("latency **")
    # no adapter was trained with k=1: OPPU + RAG (k=1) says so rather than answering with the k=2 or k=0 one
    assert out[4].startswith("(unavailable)") and "k1-lora" in out[4] and out[8] == "latency: —"
    assert app.backend.base_loads == 1  # one base folder serves every variant here
    assert sorted(app.backend.generator("LaMP-2N").resident) == ["u2-k0", "u2-k2", "u3-k0"]


def test_compare_errors_are_readable(space):
    from gradio_client import Client

    module, app, url = space
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="free-text query is empty"):
        client.predict("LaMP-2N", "u2", module.FREE_TEXT, None, "  ", 1, api_name="/compare")
    with pytest.raises(Exception, match="not in the LaMP-2N"):
        client.predict("LaMP-2N", "nobody", module.HELD_OUT, "q2", "", 1, api_name="/compare")
    # u4 is a test user without an adapter: the base columns still answer, the OPPU columns say why not
    out = client.predict("LaMP-2N", "u4", module.HELD_OUT, "q4", "", 1, api_name="/compare")
    assert "No adapter for this user" in out[0] and "unavailable" in out[3] and out[1]
    assert app.backend.users("LaMP-2N") == ["u2", "u3"]


def test_adapter_base_mismatch_is_reported(space, tmp_path):
    import json

    module, app, _ = space
    src = Path(app.backend.config.adapters_dir.replace("{variant}", "k0")) / "u2"
    root = tmp_path / "adapters"
    shutil.copytree(src, root / "u2")
    record = json.loads((root / "u2" / "oppu.json").read_text())
    fingerprint_keys = [k for k, v in record.items() if "fingerprint" in k and isinstance(v, str)]
    assert fingerprint_keys, record
    for key in fingerprint_keys:
        record[key] = "0" * len(record[key])
    (root / "u2" / "oppu.json").write_text(json.dumps(record))
    backend = module.Backend(module.SpaceConfig(**{**vars(app.backend.config), "adapters_dir": str(root)}))
    out = backend.compare("LaMP-2N", "u2", module.HELD_OUT, "q2", "", 1)
    assert any("mismatch" in n for n in out["notes"]), out["notes"]
    assert out["results"][0]["seconds"] is not None and out["results"][2]["seconds"] is None


def test_browser_compare_and_screenshot(space, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (.venv/bin/pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    _, _, url = space
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="networkidle")
            page.get_by_label("User (users with an adapter)").click()
            page.get_by_role("option", name="u3").click()
            page.get_by_text("Gold answer").wait_for(timeout=20_000)
            page.get_by_role("button", name="Compare").click()
            page.get_by_text("user u3", exact=False).first.wait_for(timeout=30_000)
            page.wait_for_function("document.querySelectorAll('.oppu-answer textarea').length === 4 && "
                                   "[...document.querySelectorAll('.oppu-answer textarea')].every(t => t.value)",
                                   timeout=30_000)
            values = page.eval_on_selector_all(".oppu-answer textarea", "ts => ts.map(t => t.value)")
            assert len(values) == 4 and all(values)
            shot = tmp_path / "space.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("OPPU_HUB_SCREENSHOT"):
        target = Path(os.environ["OPPU_HUB_SCREENSHOT"])
        target = target if target.suffix == ".png" else REPO / "docs" / "space.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)
