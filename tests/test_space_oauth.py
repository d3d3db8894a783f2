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

import gradio as gr
import gradio.oauth
import httpx
import pytest
from gradio_client import Client, handle_file
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from test_space import browser_page, free_port, launch, screenshot

from hub_server import ALICE, BOB
from oppu_hub.cli.space import load_app
from oppu_hub.compare import Backend
from oppu_hub.compare_config import FREE_TEXT, GENERATE, HELD_OUT, MOCK_OAUTH_TOKEN, SpaceConfig, SpaceError
from oppu_hub.hub_store import HubStore
from space_fixtures import FAST_MAKE, write_history

if TYPE_CHECKING:
    from hub_fixtures import HubEnv

pytest_plugins = ("hub_fixtures", "space_fixtures")

QUERY = "lantern story about the lantern"
ORG = "lamp-lab"  # alice is a member, bob is not


@pytest.fixture
def hub_space(hub_env: HubEnv, space_models, tiny_base, monkeypatch):
    """``hub:lamp-lab`` with u2's k=0 adapter public and u3's private (pushed by alice, ids hashed), and the app."""
    monkeypatch.setenv("OPPU_HUB_USER_SALT", "space-test-salt")
    real_whoami = gradio.oauth.whoami  # gradio's local sign-in wants an avatar the test Hub does not serve
    monkeypatch.setattr(gradio.oauth, "whoami", lambda: {**real_whoami(), "avatarUrl": ""})
    data, users = space_models
    folder = users / "LaMP-2N" / "k0-lora"
    HubStore(ORG, token=ALICE, private=False).push(folder / "u2")
    HubStore(ORG, token=ALICE).push(folder / "u3")
    config = SpaceConfig(data_dir=str(data), base_dir=str(tiny_base), adapters_dir=f"hub:{ORG}", task="LaMP-2N", k=1,
                         port=free_port(), max_items=4, predictions_dir=str(data / "none"), **FAST_MAKE)
    app = load_app().build_app(config)
    yield app, hub_env
    app.close()


def oauth(token: str | None) -> Any:
    """What gradio hands a handler for a visitor signed in with ``token`` (``None``: not signed in)."""

    return gr.OAuthToken(token=token, scope="openid profile read-repos write-repos manage-repos",
                         expires_at=int(time.time()) + 3600) if token else None


def handler(app, name: str):
    """The app's handler behind the API endpoint ``name``."""
    return next(f.fn for f in app.fns.values() if f.api_name == name)


def choices(app, token: str | None) -> list[str]:
    """The values of the user dropdown the visitor holding ``token`` gets."""
    update = handler(app, "task")("LaMP-2N", oauth(token))[0]
    return [value for _, value in update.choices]


def compare(app, user: str, token: str | None) -> list:
    mode, qid = (HELD_OUT, f"q{user[1:]}") if "/" not in user else (FREE_TEXT, None)
    return handler(app, "compare")("LaMP-2N", user, mode, qid, QUERY, 1, GENERATE, False, False, oauth(token))


def make(app, path: Path, token: str | None, k: int = 0) -> tuple[str, Any]:
    return handler(app, "make")("LaMP-2N", str(path), QUERY, k, None, oauth(token))


def test_visitors_list_and_load_only_what_their_own_token_may(hub_space, tmp_path):

    app, hub_env = hub_space
    assert app.backend.signs_in
    alice_status, _ = make(app, write_history(tmp_path / "alice.jsonl"), ALICE)
    make(app, write_history(tmp_path / "bob.jsonl", word="violin"), BOB)
    assert "alice/oppu-lamp-2n-alice" in alice_status

    # anonymous: public adapters only, although the Space's own token (alice's) could read u3's
    assert choices(app, None) == ["u2"]
    assert choices(app, BOB) == ["u2", "bob/oppu-lamp-2n-bob"]  # bob is not in lamp-lab; his own adapter
    assert choices(app, ALICE) == ["u2", "u3", "alice/oppu-lamp-2n-alice"]

    # alice loads u3 and her own adapter: both now sit on this machine
    assert "unavailable" not in compare(app, "u3", ALICE)[3]
    assert "unavailable" not in compare(app, "alice/oppu-lamp-2n-alice", ALICE)[3]
    # ...yet nobody else gets them: the Hub refuses their token (no fallback to alice's copy), and no request on
    # their behalf carries the Space's own token (alice's)
    start = len(hub_env.hub.requests)
    for token in (None, BOB):
        head, *answers = compare(app, "u3", token)[:5]
        assert answers[2].startswith("(unavailable) No adapter for this user") and "not found" in answers[2]
        assert "unavailable" not in answers[0]  # the base columns still answer
        assert compare(app, "alice/oppu-lamp-2n-alice", token)[3].startswith("(unavailable) No adapter")
    assert {user for _, _, user in hub_env.hub.requests[start:]} == {None, "bob"}
    assert "not in the LaMP-2N test data" in compare(app, "alice-oppu-lamp-2n-alice", BOB)[0]  # one message


def test_make_pushes_to_the_visitors_private_repo_and_delete_is_theirs_only(hub_space, tmp_path):

    app, hub_env = hub_space
    upload = write_history(tmp_path / "history.json", 6, lines=False)
    with pytest.raises(gr.Error, match="sign in with Hugging Face first"):
        make(app, upload, None)
    status, made = make(app, upload, ALICE)
    assert status.startswith("**Trained** your LaMP-2N adapter (k=0) on 4 history items (the newest of the 6 uploaded)")
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
    out = handler(app, "compare_made")(QUERY, 0, GENERATE, False, False, made)
    assert "unavailable" not in out[3] and "latency **" in out[9]  # the OPPU column's answer and its detail line

    make(app, write_history(tmp_path / "bob.jsonl"), BOB)
    delete = handler(app, "delete")
    mine = handler(app, "mine")
    assert "bob/oppu-lamp-2n-bob" in mine(oauth(BOB))[0] and "alice" not in mine(oauth(BOB))[0]
    assert mine(oauth(BOB))[1].interactive and not mine(None)[1].interactive  # the box works once signed in
    assert "Sign in with Hugging Face first" in delete(True, None, None)[0]  # one message, nothing deleted
    assert "Tick the box to confirm" in delete(False, None, oauth(BOB))[0]
    before = set(hub_env.hub.repos)
    done, state, listing, box, _ = delete(True, None, oauth(BOB))
    assert done == "Deleted `bob/oppu-lamp-2n-bob` with all revisions." and state is None
    assert "no adapter repo" in listing and box.value is False  # the box is unticked again
    assert set(hub_env.hub.repos) == before - {"bob/oppu-lamp-2n-bob"}  # alice's and the org's are untouched
    assert delete(True, None, oauth(BOB))[0] == "Nothing to delete."
    done = delete(True, made, oauth(ALICE))[0]
    assert "alice/oppu-lamp-2n-alice" in done and not Path(made.dir).exists()  # the Space's copy is gone too


def test_local_sign_in_stands_for_this_machine_only(hub_space, monkeypatch):
    app, _ = hub_space
    config = vars(app.backend.config)
    assert app.backend.visitor(MOCK_OAUTH_TOKEN).name == "alice"  # this machine's login, served on 127.0.0.1
    with pytest.raises(SpaceError, match="serve the app on 127.0.0.1"):
        Backend(SpaceConfig(**{**config, "host": "0.0.0.0"})).visitor(MOCK_OAUTH_TOKEN)
    with pytest.raises(SpaceError, match="names no namespace"):  # "hub" alone: the Space token's user
        Backend(SpaceConfig(**{**config, "adapters_dir": "hub"})).users("LaMP-2N")
    monkeypatch.setenv("SPACE_ID", "alice/oppu-hub")  # in a Space the placeholder is nobody's token
    with pytest.raises(SpaceError, match="did not accept your sign-in"):
        app.backend.visitor(MOCK_OAUTH_TOKEN)


def test_an_unreachable_hub_is_one_message(hub_space, monkeypatch):
    """The Hub does not answer: the page says so once, instead of an error on every control."""
    app, _ = hub_space
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("OPPU_HUB_TIMEOUT", "2")
    out = handler(app, "task")("LaMP-2N", oauth(None))
    assert out[-1].startswith("**⚠ cannot list the adapters in hub:lamp-lab") and "no answer from" in out[-1]
    assert all(isinstance(o, type(out[0])) for o in out[:-1])  # every other control is left as it was
    text, box, button = handler(app, "mine")(oauth(BOB))
    assert text.startswith("**⚠ the Hub did not accept your sign-in") and not box.interactive


def test_one_training_at_a_time_and_a_bounded_queue(hub_space):
    app, _ = hub_space
    train = next(f for f in app.fns.values() if f.api_name == "make")
    assert (train.concurrency_limit, train.concurrency_id) == (1, "train")
    assert app._queue.max_size == app.backend.config.max_queue


def signed_in_cookie(url: str) -> str:
    """The session cookie of gradio's local sign-in (it signs in as this machine's login: alice)."""

    with httpx.Client(base_url=url) as client:
        login = client.get("/login/huggingface")
        callback = client.get(login.headers["location"])
        return f"session={callback.cookies['session']}"


def test_gradio_client_anonymous_and_signed_in(hub_space, tmp_path):

    app, hub_env = hub_space
    url = launch(app)
    anonymous = Client(url, verbose=False)
    alice = Client(url, verbose=False, headers={"Cookie": signed_in_cookie(url)})
    assert anonymous.predict(api_name="/mine")[0].startswith("Sign in with Hugging Face")
    assert "no adapter repo" in alice.predict(api_name="/mine")[0]
    history = handle_file(write_history(tmp_path / "h.jsonl"))
    with pytest.raises(Exception, match="sign in with Hugging Face first"):
        anonymous.predict("LaMP-2N", history, QUERY, 0, api_name="/make")

    status = alice.predict("LaMP-2N", history, QUERY, 0, api_name="/make")
    assert "[alice/oppu-lamp-2n-alice]" in status
    assert "alice/oppu-lamp-2n-alice" in alice.predict(api_name="/mine")[0]
    assert hub_env.hub.repos["alice/oppu-lamp-2n-alice"].private
    for user in ("u3", "alice/oppu-lamp-2n-alice"):
        assert "unavailable" not in alice.predict("LaMP-2N", user, FREE_TEXT, None, QUERY, 1, api_name="/compare")[3]
        assert "unavailable" in anonymous.predict("LaMP-2N", user, FREE_TEXT, None, QUERY, 1, api_name="/compare")[3]
    assert "Sign in with Hugging Face first" in anonymous.predict(True, api_name="/delete")[0]
    assert "alice/oppu-lamp-2n-alice" in alice.predict(True, api_name="/delete")[0]
    assert "alice/oppu-lamp-2n-alice" not in hub_env.hub.repos


def test_browser_sign_in_make_and_delete(hub_space, tmp_path):
    app, hub_env = hub_space
    with browser_page(launch(app)) as page:
        page.get_by_role("tab", name="Delete my adapter").click()
        page.get_by_text("Sign in with Hugging Face to see and delete").wait_for(timeout=20_000)
        assert page.get_by_label("I understand").is_disabled()  # nothing to do before signing in
        assert page.get_by_role("button", name="Delete my adapter").is_disabled()
        page.get_by_role("button", name="Sign in with Hugging Face").click()
        page.get_by_role("button", name="Logout (alice)").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Make my adapter").click()
        upload = write_history(tmp_path / "history.jsonl")
        page.locator("#oppu-upload input[type=file]").set_input_files(str(upload))
        page.get_by_label("Your query").fill(QUERY)
        page.get_by_role("button", name="Train my adapter").click()  # for k=0 and k=1
        page.get_by_text("to your private repo").wait_for(timeout=120_000)
        page.wait_for_function("[...document.querySelectorAll('.oppu-made textarea')].slice(0, 4)"
                               ".every(t => t.value)", timeout=30_000)
        values = page.eval_on_selector_all(".oppu-made textarea", "ts => ts.map(t => t.value)")[:4]
        assert not any(v.startswith("(unavailable)") for v in values), values  # all four columns answer
        assert hub_env.hub.repos["alice/oppu-lamp-2n-alice"].private

        page.get_by_role("tab", name="Delete my adapter").click()
        page.get_by_role("listitem").get_by_text("alice/oppu-lamp-2n-alice").wait_for(timeout=20_000)
        page.get_by_label("I understand").check()
        page.get_by_role("button", name="Delete my adapter").click()
        page.get_by_text("Deleted alice/oppu-lamp-2n-alice with all revisions.").wait_for(timeout=20_000)
        page.get_by_text("has no adapter repo").wait_for(timeout=20_000)
        assert not page.get_by_label("I understand").is_checked()  # unticked after a delete
        screenshot(page, tmp_path / "delete.png", "delete")
    assert "alice/oppu-lamp-2n-alice" not in hub_env.hub.repos
