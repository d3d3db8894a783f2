"""The Space over a Hub store, against the test Hub (tests/hub_server.py) with two users' tokens: who may list,
load, query, make and delete which adapter. The Space's own token (``HF_TOKEN``) is alice's, who can read every
adapter of the ``lamp-lab`` org, so any read with it would show up as a leak.

The real handlers get ``gr.OAuthToken`` objects as gradio builds them from a signed-in session; through the
served app, ``gradio_client`` calls as an anonymous visitor and as one signed in by gradio's local sign-in (which
stands for this machine's login, alice); a headless Chromium signs in, makes an adapter and deletes it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_space import FAST_MAKE, free_port, launch, load_space, open_browser, screenshot, train_adapters, write_history

from conftest import make_lamp2n
from hub_server import ALICE, BOB

if TYPE_CHECKING:
    from hub_fixtures import HubEnv

pytest_plugins = ("hub_fixtures",)

QUERY = "lantern story about the lantern"
ORG = "lamp-lab"  # alice is a member, bob is not


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base) -> tuple[Path, Path]:
    """The data and the k=0 adapters of test users u2 and u3."""
    data = make_lamp2n(tmp_path_factory.mktemp("oauth-data"), {"train": 2, "test": 3})
    return data, train_adapters(data, tmp_path_factory.mktemp("oauth-users"), tiny_base, ["u2", "u3"])


@pytest.fixture
def hub_space(hub_env: HubEnv, trained, tiny_base, monkeypatch):
    """``hub:lamp-lab`` with u2's adapter public and u3's private (pushed by alice, ids hashed), and the app."""
    import gradio.oauth

    from oppu_hub.hub_store import HubStore

    monkeypatch.setenv("OPPU_HUB_USER_SALT", "space-test-salt")
    real_whoami = gradio.oauth.whoami  # gradio's local sign-in wants an avatar the test Hub does not serve
    monkeypatch.setattr(gradio.oauth, "whoami", lambda: {**real_whoami(), "avatarUrl": ""})
    data, users = trained
    folder = users / "LaMP-2N" / "k0-lora"
    HubStore(ORG, token=ALICE, private=False).push(folder / "u2")
    HubStore(ORG, token=ALICE).push(folder / "u3")
    module = load_space()
    config = module.SpaceConfig(data_dir=str(data), base_dir=str(tiny_base), adapters_dir=f"hub:{ORG}",
                                task="LaMP-2N", k=1, port=free_port(), max_items=4, **FAST_MAKE)
    app = module.build_app(config)
    yield module, app, hub_env
    app.close()


def oauth(token: str | None) -> Any:
    """What gradio hands a handler for a visitor signed in with ``token`` (``None``: not signed in)."""
    import gradio as gr

    return gr.OAuthToken(token=token, scope="openid profile read-repos write-repos manage-repos",
                         expires_at=int(time.time()) + 3600) if token else None


def handler(app, name: str):
    """The app's handler behind the API endpoint ``name``."""
    return next(f.fn for f in app.fns.values() if f.api_name == name)


def choices(app, token: str | None) -> list[str]:
    """The values of the user dropdown the visitor holding ``token`` gets."""
    update = handler(app, "task")("LaMP-2N", oauth(token))[0]
    return [value for _, value in update.choices]


def compare(app, module, user: str, token: str | None) -> tuple:
    mode, qid = (module.HELD_OUT, f"q{user[1:]}") if "/" not in user else (module.FREE_TEXT, None)
    return handler(app, "compare")("LaMP-2N", user, mode, qid, QUERY, 1, oauth(token))


def make(app, path: Path, token: str | None) -> tuple[str, dict]:
    return handler(app, "make")("LaMP-2N", str(path), QUERY, None, oauth(token))


def test_visitors_list_and_load_only_what_their_own_token_may(hub_space, tmp_path):
    import gradio as gr

    module, app, hub_env = hub_space
    assert app.backend.signs_in
    alice_status, _ = make(app, write_history(tmp_path / "alice.jsonl"), ALICE)
    make(app, write_history(tmp_path / "bob.jsonl", word="violin"), BOB)
    assert "alice/oppu-lamp-2n-alice" in alice_status

    # anonymous: public adapters only, although the Space's own token (alice's) could read u3's
    assert choices(app, None) == ["u2"]
    assert choices(app, BOB) == ["u2", "bob/oppu-lamp-2n-bob"]  # bob is not in lamp-lab; his own adapter
    assert choices(app, ALICE) == ["u2", "u3", "alice/oppu-lamp-2n-alice"]

    # alice loads u3 and her own adapter: both now sit on this machine
    assert "unavailable" not in compare(app, module, "u3", ALICE)[3]
    assert "unavailable" not in compare(app, module, "alice/oppu-lamp-2n-alice", ALICE)[3]
    # ...yet nobody else gets them: the Hub refuses their token (no fallback to alice's copy), and no request on
    # their behalf carries the Space's own token (alice's)
    start = len(hub_env.hub.requests)
    for token in (None, BOB):
        head, *answers = compare(app, module, "u3", token)[:5]
        assert answers[2].startswith("(unavailable) No adapter for this user") and "not found" in answers[2]
        assert "unavailable" not in answers[0]  # the base columns still answer
        assert compare(app, module, "alice/oppu-lamp-2n-alice", token)[3].startswith("(unavailable) No adapter")
    assert {user for _, _, user in hub_env.hub.requests[start:]} == {None, "bob"}
    with pytest.raises(gr.Error, match="not in the LaMP-2N test data"):
        compare(app, module, "alice-oppu-lamp-2n-alice", BOB)


def test_make_pushes_to_the_visitors_private_repo_and_delete_is_theirs_only(hub_space, tmp_path):
    import gradio as gr
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    module, app, hub_env = hub_space
    upload = write_history(tmp_path / "history.json", 6, lines=False)
    with pytest.raises(gr.Error, match="sign in with Hugging Face first"):
        make(app, upload, None)
    status, made = make(app, upload, ALICE)
    assert status.startswith("**Trained** your LaMP-2N adapter on 4 history items (the newest of the 6 uploaded)")
    assert "[alice/oppu-lamp-2n-alice]" in status
    api = HfApi(endpoint=hub_env.url, token=ALICE)
    info = api.model_info("alice/oppu-lamp-2n-alice")
    assert info.private and {s.rfilename for s in info.siblings} >= {
        "adapter_config.json", "adapter_model.safetensors", "oppu.json", "README.md"}
    assert {"oppu", "lamp-2n", "lora", "user-alice"} <= set(info.card_data.tags)
    record = json.loads(Path(api.hf_hub_download("alice/oppu-lamp-2n-alice", "oppu.json")).read_text())
    assert (record["user_id"], record["k"], record["num_history_items"]) == ("alice", 0, 4)
    assert record["trained_item_ids"] == ["h2", "h3", "h4", "h5"]  # the newest max_items
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub_env.url, token=BOB).model_info("alice/oppu-lamp-2n-alice")
    out = handler(app, "compare_made")(QUERY, 1, made)
    assert "unavailable" not in out[3] and out[7].startswith("latency **")

    make(app, write_history(tmp_path / "bob.jsonl"), BOB)
    delete = handler(app, "delete")
    mine = handler(app, "mine")
    assert "bob/oppu-lamp-2n-bob" in mine(oauth(BOB)) and "alice" not in mine(oauth(BOB))
    with pytest.raises(gr.Error, match="sign in"):
        delete(True, None, None)
    with pytest.raises(gr.Error, match="tick the box"):
        delete(False, None, oauth(BOB))
    before = set(hub_env.hub.repos)
    done, state, listing = delete(True, None, oauth(BOB))
    assert done == "Deleted `bob/oppu-lamp-2n-bob` with all revisions." and state is None
    assert "no adapter repo" in listing
    assert set(hub_env.hub.repos) == before - {"bob/oppu-lamp-2n-bob"}  # alice's and the org's are untouched
    assert delete(True, None, oauth(BOB))[0] == "Nothing to delete."
    done, _, _ = delete(True, made, oauth(ALICE))
    assert "alice/oppu-lamp-2n-alice" in done and not Path(made["dir"]).exists()  # the Space's copy is gone too


def test_local_sign_in_stands_for_this_machine_only(hub_space, monkeypatch):
    module, app, _ = hub_space
    config = vars(app.backend.config)
    assert app.backend.visitor(module.MOCK_OAUTH_TOKEN).name == "alice"  # this machine's login, served on 127.0.0.1
    with pytest.raises(module.SpaceError, match="serve the app on 127.0.0.1"):
        module.Backend(module.SpaceConfig(**{**config, "host": "0.0.0.0"})).visitor(module.MOCK_OAUTH_TOKEN)
    with pytest.raises(module.SpaceError, match="names no namespace"):  # "hub" alone: the Space token's user
        module.Backend(module.SpaceConfig(**{**config, "adapters_dir": "hub"})).users("LaMP-2N")
    monkeypatch.setenv("SPACE_ID", "alice/oppu-hub")  # in a Space the placeholder is nobody's token
    with pytest.raises(module.SpaceError, match="did not accept your sign-in"):
        app.backend.visitor(module.MOCK_OAUTH_TOKEN)


def test_one_training_at_a_time_and_a_bounded_queue(hub_space):
    _, app, _ = hub_space
    train = next(f for f in app.fns.values() if f.api_name == "make")
    assert (train.concurrency_limit, train.concurrency_id) == (1, "train")
    assert app._queue.max_size == app.backend.config.max_queue


def signed_in_cookie(url: str) -> str:
    """The session cookie of gradio's local sign-in (it signs in as this machine's login: alice)."""
    import httpx

    with httpx.Client(base_url=url) as client:
        login = client.get("/login/huggingface")
        callback = client.get(login.headers["location"])
        return f"session={callback.cookies['session']}"


def test_gradio_client_anonymous_and_signed_in(hub_space, tmp_path):
    from gradio_client import Client, handle_file

    module, app, hub_env = hub_space
    url = launch(app)
    anonymous = Client(url, verbose=False)
    alice = Client(url, verbose=False, headers={"Cookie": signed_in_cookie(url)})
    assert anonymous.predict(api_name="/mine").startswith("Sign in with Hugging Face")
    assert "no adapter repo" in alice.predict(api_name="/mine")
    with pytest.raises(Exception, match="sign in with Hugging Face first"):
        anonymous.predict("LaMP-2N", handle_file(write_history(tmp_path / "h.jsonl")), QUERY, api_name="/make")

    status = alice.predict("LaMP-2N", handle_file(write_history(tmp_path / "h.jsonl")), QUERY, api_name="/make")
    assert "[alice/oppu-lamp-2n-alice]" in status
    assert "alice/oppu-lamp-2n-alice" in alice.predict(api_name="/mine")
    assert hub_env.hub.repos["alice/oppu-lamp-2n-alice"].private
    for user in ("u3", "alice/oppu-lamp-2n-alice"):
        mode = module.FREE_TEXT
        assert "unavailable" not in alice.predict("LaMP-2N", user, mode, None, QUERY, 1, api_name="/compare")[3]
        assert "unavailable" in anonymous.predict("LaMP-2N", user, mode, None, QUERY, 1, api_name="/compare")[3]
    with pytest.raises(Exception, match="sign in"):
        anonymous.predict(True, api_name="/delete")
    assert "alice/oppu-lamp-2n-alice" in alice.predict(True, api_name="/delete")[0]
    assert "alice/oppu-lamp-2n-alice" not in hub_env.hub.repos


def test_browser_sign_in_make_and_delete(hub_space, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (.venv/bin/pip install playwright)")
    _, app, hub_env = hub_space
    url = launch(app)
    with sync_playwright() as p:
        browser = open_browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            page.get_by_role("button", name="Sign in with Hugging Face").click()
            page.get_by_role("button", name="Logout (alice)").wait_for(timeout=30_000)
            page.get_by_role("tab", name="Make my adapter").click()
            upload = write_history(tmp_path / "history.jsonl")
            page.locator("#oppu-upload input[type=file]").set_input_files(str(upload))
            page.get_by_label("Your query").fill(QUERY)
            page.get_by_role("button", name="Train my adapter").click()
            page.get_by_text("Pushed to your private repo").wait_for(timeout=60_000)
            page.wait_for_function("[...document.querySelectorAll('.oppu-made-answer textarea')].filter(t => t.value)"
                                   ".length === 4", timeout=30_000)
            values = page.eval_on_selector_all(".oppu-made-answer textarea", "ts => ts.map(t => t.value)")
            assert not values[2].startswith("(unavailable)") and values[3].startswith("(unavailable)")
            assert hub_env.hub.repos["alice/oppu-lamp-2n-alice"].private
            screenshot(page, tmp_path / "space.png", keep=True)

            page.get_by_role("tab", name="Delete my adapter").click()
            page.get_by_role("listitem").get_by_text("alice/oppu-lamp-2n-alice").wait_for(timeout=20_000)
            page.get_by_label("I understand").check()
            page.get_by_role("button", name="Delete my adapter").click()
            page.get_by_text("Deleted alice/oppu-lamp-2n-alice with all revisions.").wait_for(timeout=20_000)
        finally:
            browser.close()
    assert "alice/oppu-lamp-2n-alice" not in hub_env.hub.repos
