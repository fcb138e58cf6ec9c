"""Who a visitor is, as only the site's backend can say: an identify from the page counts
only with the user_hash the backend signed with the site's identity secret."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from conftest import LOOPBACK, make_key, settings_with_rules
from popin.config import ConfigError, Settings, load_settings
from popin.core.site import Site
from popin.web.app import create_app

RULES = """
rules:
  - id: welcome
    category: transactional
    trigger: {event: signup}
    popin: {title: "Welcome {{ visitor.first_name }}!", body: "<p>Your account</p>"}
"""
ORIGIN = {"origin": "http://testserver"}
SECRET = "demo-identity-secret-0123456789"
OTHER_SECRET = "other-identity-secret-0123456789"


def user_hash(secret: str, user_id: str) -> str:
    """What the README tells a site's backend to compute."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def make_settings(folder: Path, unsigned: str = "refuse") -> Settings:
    return settings_with_rules(folder, RULES, sites={
        "demo": Site("demo", "Demo shop", identity_secret=SECRET, unsigned_identify=unsigned),
        "other": Site("other", "Other shop", identity_secret=OTHER_SECRET)})


@pytest.fixture
def settings_(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings_: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings_), client=LOOPBACK) as test_client:
        yield test_client


def send(ws: Any, message: dict[str, Any]) -> None:
    ws.send_text(orjson.dumps(message).decode())


def hello(ws: Any, visitor: str) -> None:
    send(ws, {"type": "hello", "visitor": visitor, "session": "session-0001",
              "url": "http://testserver/demo/"})
    assert ws.receive_json()["type"] == "config"


def identify(ws: Any, user_id: str, user_hash: str = "", **traits: str) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "identify", "user_id": user_id, "traits": traits}
    if user_hash:
        message["user_hash"] = user_hash
    send(ws, message)
    answer: dict[str, Any] = ws.receive_json()
    return answer


def victim(client: TestClient, settings_: Settings) -> str:
    """user-42, known to the site's backend, with a hashed e-mail and a pop-in waiting."""
    token = make_key(settings_, "events", "profiles")
    headers = {"Authorization": f"Bearer {token}"}
    linked = client.post("/api/v1/identify", headers=headers, json={
        "visitor": "visitor-victim", "user_id": "user-42",
        "traits": {"first_name": "Léa", "email": "lea@example.com"}})
    assert linked.status_code == 200
    queued = client.post("/api/v1/events", headers=headers, json={"events": [
        {"name": "signup", "user_id": "user-42"}]})
    assert queued.json()["results"][0]["queued"] == 1
    return token


def stored_user(settings_: Settings, user_id: str) -> str | None:
    db = sqlite3.connect(settings_.store.removeprefix("sqlite:///"))
    try:
        row = db.execute("SELECT visitor FROM users WHERE site = 'demo' AND user_id = ?",
                         (user_id,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def test_an_unsigned_identify_cannot_take_over_a_profile(
        client: TestClient, settings_: Settings) -> None:
    token = victim(client, settings_)
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        hello(ws, "visitor-attacker")
        answer = identify(ws, "user-42", email="attacker@example.com")
        assert answer["type"] == "error" and answer["code"] == "unverified"
        assert answer["field"] == "user_hash"
        # Nothing of the victim's reaches this socket: the next frame is our own barrier.
        ws.send_text("barrier")
        assert ws.receive_json()["code"] == "bad_json"
    profile = client.get("/api/v1/users/user-42",
                         headers={"Authorization": f"Bearer {token}"}).json()
    assert profile["visitor"] == "visitor-victim"
    assert profile["email_sha256"] == hashlib.sha256(b"lea@example.com").hexdigest()
    assert stored_user(settings_, "user-42") == "visitor-victim"
    assert 'kind="refused.identify"} 1' in client.get("/metrics").text
    # The victim still gets their pop-in.
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        hello(ws, "visitor-victim")
        assert ws.receive_json()["rule"] == "welcome"


@pytest.mark.parametrize("forged", [
    "0" * 64,
    user_hash(SECRET, "user-43"),           # a real hash, for another user
    user_hash(OTHER_SECRET, "user-42"),     # the right user, another site's secret
    user_hash(SECRET, "user-42 "),          # near miss
    user_hash(SECRET, "user-42").upper()[:-1] + "0",
])
def test_a_forged_or_replayed_hash_is_refused(
        client: TestClient, settings_: Settings, forged: str) -> None:
    victim(client, settings_)
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        hello(ws, "visitor-attacker")
        assert identify(ws, "user-42", forged)["code"] == "unverified"
    assert stored_user(settings_, "user-42") == "visitor-victim"


def test_a_signed_identify_converges_the_users_devices(
        client: TestClient, settings_: Settings) -> None:
    victim(client, settings_)
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        hello(ws, "visitor-phone")
        answer = identify(ws, "user-42", user_hash(SECRET, "user-42"))
        assert answer == {"type": "identity", "visitor": "visitor-victim"}
    # The hex may come in capitals from some backends.
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        hello(ws, "visitor-tablet")
        answer = identify(ws, "user-42", user_hash(SECRET, "user-42").upper())
        assert answer == {"type": "identity", "visitor": "visitor-victim"}


def test_another_sites_secret_does_not_open_this_site(
        client: TestClient, settings_: Settings) -> None:
    victim(client, settings_)
    with client.websocket_connect("/ws?site=other", headers=ORIGIN) as ws:
        hello(ws, "visitor-attacker")
        # Valid on "other", where user-42 is nobody: it links there and only there.
        assert identify(ws, "user-42", user_hash(OTHER_SECRET, "user-42")) == {
            "type": "identity", "visitor": "visitor-attacker"}
    assert stored_user(settings_, "user-42") == "visitor-victim"


def test_nobody_claims_a_user_id_before_its_owner_by_default(
        client: TestClient, settings_: Settings) -> None:
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        hello(ws, "visitor-early")
        assert identify(ws, "user-99")["code"] == "unverified"
    assert stored_user(settings_, "user-99") is None


def test_unsigned_identify_for_new_users_only_when_the_site_says_so(tmp_path: Path) -> None:
    settings_ = make_settings(tmp_path, unsigned="new_users")
    with TestClient(create_app(settings_)) as client:
        victim(client, settings_)
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
            hello(ws, "visitor-newcomer")
            assert identify(ws, "user-42")["code"] == "unverified", "linked before"
            assert identify(ws, "user-77") == {"type": "identity",
                                               "visitor": "visitor-newcomer"}
            assert identify(ws, "user-78")["code"] == "unverified", "already user-77"
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
            hello(ws, "visitor-other-one")
            assert identify(ws, "user-77")["code"] == "unverified", "user-77 is taken now"
    assert stored_user(settings_, "user-42") == "visitor-victim"
    assert stored_user(settings_, "user-77") == "visitor-newcomer"
    assert stored_user(settings_, "user-78") is None


@pytest.mark.parametrize(("entry", "complaint"), [
    ('unsigned_identify = "always"', "unsigned_identify is 'refuse' or 'new_users'"),
    ('identity_secret = "short"', "identity_secret must be at least 16 characters"),
])
def test_identity_settings_are_checked(tmp_path: Path, entry: str, complaint: str) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(f'[[sites]]\nkey = "demo"\n{entry}\n')
    with pytest.raises(ConfigError, match=complaint):
        load_settings(path)


def test_the_readme_shows_how_a_backend_computes_the_hash() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "hash_hmac('sha256', $userId, $identitySecret)" in readme
    assert "createHmac('sha256', identitySecret).update(userId).digest('hex')" in readme
    (python,) = [line.removeprefix("Python").strip() for line in readme.splitlines()
                 if line.startswith("Python  hmac.new(")]
    computed = eval(python, {"hmac": hmac, "hashlib": hashlib, "IDENTITY_SECRET": SECRET,
                             "user_id": "user-42"})
    assert computed == user_hash(SECRET, "user-42")


def test_a_vouched_identify_revokes_an_unsigned_claim(tmp_path: Path) -> None:
    """Under "new_users" an attacker may claim an id nobody holds yet; when its owner
    signs in with the backend's hash, the claim is revoked: the owner is not merged into
    the attacker's visitor, and the attacker's socket is closed and gets nothing."""
    from starlette.websockets import WebSocketDisconnect

    settings_ = make_settings(tmp_path, unsigned="new_users")
    with TestClient(create_app(settings_), client=LOOPBACK) as client:
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as attacker:
            hello(attacker, "visitor-squatter")
            assert identify(attacker, "user-55") == {"type": "identity",
                                                     "visitor": "visitor-squatter"}
            with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as owner:
                hello(owner, "visitor-owner")
                answer = identify(owner, "user-55", user_hash(SECRET, "user-55"),
                                  first_name="Real")
                assert answer == {"type": "identity", "visitor": "visitor-owner"}
            with pytest.raises(WebSocketDisconnect) as closed:
                attacker.receive_json()
            assert closed.value.code == 4010
        assert stored_user(settings_, "user-55") == "visitor-owner"
        assert 'kind="identity.claim_revoked"} 1' in client.get("/metrics").text
