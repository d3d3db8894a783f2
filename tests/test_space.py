"""The Gradio Space (space/app.py) on a local folder of adapters (nobody signs in): the /compare API through
gradio_client, UI errors, "Make my adapter" (upload checks, training, the four-way comparison, nothing pushed), and
a real headless Chromium (Playwright) loading the page and running a comparison. The Space over a Hub store, with
visitors signing in, is tests/test_space_oauth.py."""

from __future__ import annotations

import importlib.util
import json
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


def train_adapters(data: Path, out: Path, base: Path, users: list[str], ks: tuple[int, ...] = (0,)) -> Path:
    """The users' adapters for each k (each column's adapters are trained with its prompts); returns ``out``."""
    from trainers import UserAdapterConfig, train_users

    for k in ks:
        config = UserAdapterConfig(task="LaMP-2N", data_dir=str(data), base_dir=str(base), k=k, output_dir=str(out),
                                   users=users, per_device_train_batch_size=3, logging_steps=1, precision="fp32",
                                   learning_rate=0.02, num_train_epochs=8,
                                   target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
        report = train_users(config)
        assert sorted(report.trained) == sorted(users) and not report.failed
    return out


def write_history(path: Path, n: int = 6, word: str = "lantern", label: str = "sports", lines: bool = True) -> Path:
    """A visitor's upload: ``n`` LaMP-2N history items about ``word``, all labelled ``label`` (JSON Lines, or a
    JSON list)."""
    items = [{"id": f"h{j}", "text": f"{word} story number {j} about the {word}", "title": f"{word} {j}",
              "category": label, "date": f"2021-02-{j + 1:02d}"} for j in range(n)]
    path.write_text("\n".join(json.dumps(i) for i in items) if lines else json.dumps(items))
    return path


def launch(app) -> str:
    app.launch(server_name="127.0.0.1", server_port=app.backend.config.port, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{app.backend.config.port}/"


def open_browser(p):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def screenshot(page, path: Path, *, keep: bool = False) -> None:
    """A full-page screenshot; ``keep``: also copied to ``$OPPU_HUB_SCREENSHOT`` (a .png path, else
    docs/space.png) when that is set."""
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if keep and os.environ.get("OPPU_HUB_SCREENSHOT"):
        target = Path(os.environ["OPPU_HUB_SCREENSHOT"])
        target = target if target.suffix == ".png" else REPO / "docs" / "space.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)


# Fast settings for a visitor's adapter on the tiny random base (the Space defaults are the 135M base's).
FAST_MAKE = dict(train_epochs=8, train_learning_rate=0.02)


@pytest.fixture(scope="module")
def space(tmp_path_factory, tiny_base):
    """Adapters of two test users (a third test user has none) and the app serving them."""
    data = make_lamp2n(tmp_path_factory.mktemp("space-data"), {"train": 2, "test": 3})
    users = train_adapters(data, tmp_path_factory.mktemp("space-users"), tiny_base, ["u2", "u3"], ks=(0, 2))
    module = load_space()
    cfg = module.SpaceConfig(data_dir=str(data), base_dir=str(tiny_base),
                             adapters_dir=str(users / "LaMP-2N" / "{variant}-lora"), task="LaMP-2N", k=2,
                             port=free_port(), **FAST_MAKE)
    app = module.build_app(cfg)
    url = launch(app)
    try:
        yield module, app, url
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


def test_make_my_adapter_without_sign_in(space, tmp_path):
    """Nobody signs in over a local folder: the adapter is trained and compared in the session, not pushed."""
    from gradio_client import Client, handle_file
    from safetensors.torch import load_file

    module, app, url = space
    assert not app.backend.signs_in
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="make your adapter first"):
        client.predict("lantern story", 2, api_name="/compare_made")
    status = client.predict("LaMP-2N", handle_file(write_history(tmp_path / "history.jsonl")),
                            "lantern story about the lantern", api_name="/make")
    assert status.startswith("**Trained** your LaMP-2N adapter on 6 history items") and "Not pushed" in status
    out = client.predict("lantern story about the lantern", 2, api_name="/compare_made")  # the same session
    head, answers, latencies, table = out[0], out[1:5], out[5:9], out[9]
    assert f"user **{module.LOCAL_VISITOR}**" in head
    assert all(x.startswith("latency **") for x in latencies[:3])
    assert answers[2] != answers[0], answers  # the new adapter changes the answer of the random base
    # OPPU + RAG needs an adapter trained with k=2 prompts; the visitor's is trained with k=0, and says so
    assert answers[3].startswith("(unavailable) Adapter trained for another column") and latencies[3] == "latency: —"
    assert len(table["data"]) == 2 and all("lantern" in row[4] for row in table["data"])  # from the upload
    made = next((app.backend.work / "made").rglob("adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for name, t in load_file(made).items() if "lora_B" in name)

    steps: list[tuple[float, str]] = []  # what the progress bar shows
    app.backend.make_adapter("LaMP-2N", str(tmp_path / "history.jsonl"), "a query", module.ANONYMOUS,
                             lambda fraction, desc: steps.append((fraction, desc)))
    assert [f for f, _ in steps] == sorted(f for f, _ in steps) and steps[-1] == (1.0, "done")
    assert any(d.startswith("training on 6 items x 8 epochs (") and " tokens): about " in d for _, d in steps)


def test_uploads_are_checked_clearly(space, tmp_path):
    module, app, _ = space
    task = module._get_task("LaMP-2N")
    question = {"id": module.QUERY_ID, "input": task.format_input(text="a query"), "user_id": "you"}

    def read(text: str, name: str = "history.json") -> list:
        (tmp_path / name).write_text(text)
        return module.read_history(tmp_path / name, task, question)

    items = json.loads(write_history(tmp_path / "h.json", 3, lines=False).read_text())
    assert [i["id"] for i in read(json.dumps(items[::-1]))] == ["h0", "h1", "h2"]  # put in time order
    assert len(read(json.dumps({"id": "q", "input": "x", "profile": items}))) == 3  # a LaMP question's profile
    with pytest.raises(module.SpaceError, match=r"history.json: question 'your query': profile item 'h1' lacks "
                                                r"\['category'\]"):
        read(json.dumps([items[0], {k: v for k, v in items[1].items() if k != "category"}]))
    with pytest.raises(module.SpaceError, match="duplicate profile item id 'h0'"):
        read(json.dumps([items[0], items[0]]))
    with pytest.raises(module.SpaceError, match="empty profile"):
        read("[]")
    with pytest.raises(module.SpaceError, match=r"history.jsonl, line 2: not valid JSON"):
        read(json.dumps(items[0]) + "\n{oops\n", "history.jsonl")
    with pytest.raises(module.SpaceError, match="history.json is not JSON"):
        read("category,text\nsports,a story")
    with pytest.raises(module.SpaceError, match="not a JSON str"):
        read('"a story"')
    with pytest.raises(module.SpaceError, match="upload your history first"):
        app.backend.make_adapter("LaMP-2N", None, "a query", module.ANONYMOUS)
    with pytest.raises(module.SpaceError, match="type a query first"):
        app.backend.make_adapter("LaMP-2N", str(tmp_path / "h.json"), " ", module.ANONYMOUS)


def test_browser_compare_and_screenshot(space, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (.venv/bin/pip install playwright)")
    _, _, url = space
    with sync_playwright() as p:
        browser = open_browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)  # not "networkidle": the session's heartbeat stream stays open
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
            assert page.get_by_role("button", name="Sign in with Hugging Face").count() == 0  # nobody signs in here
            screenshot(page, tmp_path / "space.png")
        finally:
            browser.close()
