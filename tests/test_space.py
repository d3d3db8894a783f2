"""The Space's page (space/app.py) over a local folder of adapters (nobody signs in): the /compare and /make API
through gradio_client, messages instead of errors, and a real headless Chromium (Playwright): the chart on first
load and none for a label-less task, k choices, clickable examples, answers marked right or wrong, "Make my adapter"
with its progress bar advancing and all four columns answering. The comparison itself is tested without Gradio in
tests/test_compare.py; the Space over a Hub store, with visitors signing in, in tests/test_space_oauth.py.

``OPPU_HUB_SCREENSHOT=DIR`` keeps a screenshot of each tab the browser tests visit as ``DIR/space-{tab}.png``."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file

from conftest import REPO
from oppu_hub.cli.space import load_app
from oppu_hub.compare_config import FREE_TEXT, GENERATE, HELD_OUT, SpaceConfig
from space_fixtures import FAST_MAKE, write_history

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytest_plugins = ("space_fixtures",)
CHROMIUM = os.environ.get("OPPU_HUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}
GAINS = REPO / "bench" / "results" / "analyses" / "user-gains.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(app) -> str:
    app.launch(server_name="127.0.0.1", server_port=app.backend.config.port, prevent_thread_lock=True, quiet=True,
               css=load_app().CSS)
    return f"http://127.0.0.1:{app.backend.config.port}/"


@contextlib.contextmanager
def browser_page(url: str) -> Iterator[Any]:
    """A page of headless Chromium at ``url`` (the test skips, saying why, without Playwright or Chromium)."""
    try:
        from playwright.sync_api import sync_playwright  # optional: the browser tests skip without it
    except ImportError:
        pytest.skip("playwright is not installed (.venv/bin/pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)  # not "networkidle": the session's heartbeat stream stays open
            yield page
        finally:
            browser.close()


def screenshot(page, path: Path, tab: str | None = None) -> None:
    """A full-page screenshot; with ``tab``, also kept as ``$OPPU_HUB_SCREENSHOT/space-{tab}.png`` when that is
    set."""
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if tab and os.environ.get("OPPU_HUB_SCREENSHOT"):
        folder = Path(os.environ["OPPU_HUB_SCREENSHOT"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"space-{tab}.png")


def answers(page, css: str) -> list[str]:
    return page.eval_on_selector_all(f".{css} textarea", "ts => ts.map(t => t.value)")


@pytest.fixture(scope="module")
def space(space_models, tiny_base, tmp_path_factory):
    """The page over the LaMP-2N (k=0, 2) and LaMP-4 (k=0) adapters, served on a free port."""
    data, users = space_models
    module = load_app()
    config = SpaceConfig(data_dir=str(data), base_dir=str(tiny_base),
                         adapters_dir=str(users / "{task}" / "{variant}-lora"), task="LaMP-2N", k=2,
                         port=free_port(), gains_plot=str(GAINS),
                         predictions_dir=str(tmp_path_factory.mktemp("none") / "{task}"), **FAST_MAKE)
    app = module.build_app(config)
    url = launch(app)
    try:
        yield module, app, url
    finally:
        app.close()


def test_compare_api_every_column(space):

    module, app, url = space
    client = Client(url, verbose=False)
    out = client.predict("LaMP-2N", "u2", HELD_OUT, "q2", "", 2, GENERATE, True, False, api_name="/compare")
    head, boxes, details, table = out[0], out[1:6], out[7:12], out[-1]
    assert "user **u2**" in head and "gold: `parents`" in head and "columns right" in head
    assert all(isinstance(a, str) and a and "unavailable" not in a for a in boxes)  # the fifth: contrastive
    assert all(("✓ right" in d or "✗ wrong" in d) and "latency **" in d for d in details)
    assert "`oppu-cd-k2`" in details[4] and out[6] == out[12] == ""  # no two-stage column asked for
    assert len(table["data"]) == 2 and table["headers"] == ["rank", "BM25 score", "date", "label", "item"]
    out = client.predict("LaMP-2N", "u3", FREE_TEXT, None, "quantum story about the quantum", 0, api_name="/compare")
    assert "gold" not in out[0] and all(out[1:5]) and out[5] == out[6] == ""  # no optional column asked for
    assert app.backend.base_loads == 1  # one base folder serves every variant here


def test_compare_problems_are_one_message(space):

    _, app, url = space
    client = Client(url, verbose=False)
    out = client.predict("LaMP-2N", "u2", FREE_TEXT, None, "  ", 2, api_name="/compare")  # no error raised
    assert out[0].startswith("**⚠ the free-text query is empty") and not any(out[1:13])
    with pytest.raises(Exception, match=r"1 .* is not in the list of choices: \[0, 2\]"):  # k=1 has no models
        client.predict("LaMP-2N", "u2", HELD_OUT, "q2", "", 1, api_name="/compare")
    out = client.predict("LaMP-2N", "nobody", HELD_OUT, "q2", "", 2, api_name="/compare")
    assert "not in the LaMP-2N test data" in out[0]


def test_make_my_adapter_without_sign_in(space, tmp_path):
    """Nobody signs in over a local folder: adapters for k=0 and k=2 are trained and compared in the session."""

    module, app, url = space
    assert not app.backend.signs_in
    client = Client(url, verbose=False)
    out = client.predict("lantern story", 2, api_name="/compare_made")
    assert "make your adapter first" in out[0]
    status = client.predict("LaMP-2N", handle_file(write_history(tmp_path / "history.jsonl")),
                            "lantern story about the lantern", 2, api_name="/make")
    assert status.startswith("**Trained** your LaMP-2N adapter (k=0 and k=2) on 6 history items")
    assert "Not pushed" in status
    out = client.predict("lantern story about the lantern", 2, api_name="/compare_made")  # the same session
    head, boxes, details = out[0], out[1:5], out[7:11]
    assert "user **you**" in head and "Warning" not in head
    assert all(b and "unavailable" not in b for b in boxes) and all("latency **" in d for d in details)
    assert all("lantern" in row[-1] for row in out[-1]["data"])  # retrieved from the upload


def test_browser_compare(space, tmp_path):
    _, app, url = space
    with browser_page(url) as page:
        page.get_by_text("Gold answer").wait_for(timeout=30_000)
        # the history chart draws its bars on first load, with no event
        page.locator("#oppu-history-plot .mark-rect path").first.wait_for(timeout=30_000)
        assert page.locator("#oppu-history-plot .mark-rect path").count() == 1  # u2: one label
        # the k control offers only the depths with trained models
        assert page.locator("#oppu-k label").all_inner_texts() == ["k=0", "k=2"]
        assert page.get_by_role("button", name="Sign in with Hugging Face").count() == 0  # nobody signs in
        # a clickable example fills the query in and compares at once; each answer is marked
        page.get_by_text(", free text:").first.click()
        page.wait_for_function("[...document.querySelectorAll('.oppu-compare textarea')].slice(0, 4)"
                               ".every(t => t.value)", timeout=60_000)
        assert page.get_by_label("Free-text query").is_visible()
        assert not page.get_by_text("Gold answer").is_visible()  # free text: no held-out query, no gold
        page.get_by_label("held-out query").check()
        page.get_by_text("Gold answer").wait_for(timeout=10_000)
        page.get_by_role("button", name="Compare", exact=True).click()
        page.get_by_text("columns right").wait_for(timeout=60_000)
        marked = ".oppu-col:has(.oppu-mark-right, .oppu-mark-wrong) .oppu-compare textarea"
        assert page.locator(marked).count() == 4
        screenshot(page, tmp_path / "compare.png", "compare")
        # LaMP-4 has no labels: no chart, no label column, items cut at a word
        page.get_by_label("Task").first.click()
        page.get_by_role("option", name="LaMP-4").click()
        page.get_by_text("latest:").wait_for(timeout=30_000)
        assert not page.locator("#oppu-history-plot").is_visible()
        assert page.locator("#oppu-k label").all_inner_texts() == ["k=0"]
        if GAINS.is_file():
            page.get_by_role("tab", name="Leaderboard: per-user gains").click()
            page.get_by_text("It covers").wait_for(timeout=10_000)
            screenshot(page, tmp_path / "gains.png", "gains")


def test_browser_make_my_adapter(space, tmp_path):
    _, app, url = space
    with browser_page(url) as page:
        page.get_by_role("tab", name="Make my adapter").click()
        assert page.locator("#oppu-make-k label").all_inner_texts() == ["k=0", "k=2"]
        page.locator("#oppu-upload input[type=file]").set_input_files(str(write_history(tmp_path / "h.jsonl")))
        page.get_by_label("Your query").fill("lantern story about the lantern")
        page.evaluate("""() => {  // every progress text gradio shows while training
            window.progress = [];
            new MutationObserver(() => document.querySelectorAll('.progress-text, .progress-level')
                .forEach(e => window.progress.push(e.innerText))).observe(document.body,
                {subtree: true, childList: true, characterData: true});
        }""")
        page.get_by_role("button", name="Train my adapter").click()
        page.get_by_text("Not pushed").wait_for(timeout=120_000)
        page.wait_for_function("[...document.querySelectorAll('.oppu-made textarea')].slice(0, 4)"
                               ".every(t => t.value)", timeout=60_000)
        values = answers(page, "oppu-made")[:4]
        assert not any(v.startswith("(unavailable)") for v in values), values  # all four columns answer
        shown = page.evaluate("window.progress")
        steps = {s for s in shown if "step" in s}
        assert len(steps) > 3, shown  # the bar advanced step by step
        screenshot(page, tmp_path / "make.png", "make")
