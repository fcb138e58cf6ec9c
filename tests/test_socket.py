"""The widget socket in process: handshake checks, the message loop, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import LOOPBACK, run
from popin.config import Settings
from popin.core.site import Site
from popin.core.wire.protocol import MAX_ERRORS_PER_CONNECTION, MAX_MESSAGE_BYTES
from popin.stores.backends import open_store
from popin.web.app import create_app

RULES = """
rules:
  - id: wax
    trigger: {dwell: {keyword: waxing, seconds: 5}}
    popin: {title: "About {{ trigger.keyword }}", body: "<p>kit</p>"}
  - id: cart
    trigger: {event: add_to_cart}
    popin: {title: "{{ trigger.props.name }}", body: b}
"""
ORIGIN = {"origin": "http://testserver", "user-agent": "Mozilla/5.0 (X11; Linux x86_64) "
          "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"}
VISITOR = "visitor-0001"


def hello(session: str = "session-0001") -> dict[str, Any]:
    return {"type": "hello", "visitor": VISITOR, "session": session,
            "url": "http://testserver/demo/skis.html"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "test.yaml").write_text(RULES)
    return Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=tmp_path / "rules",
                    sites={"demo": Site("demo"), "shop": Site("shop", origins=(
                        "https://shop.example",))})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=LOOPBACK) as test_client:
        yield test_client


def metrics(client: TestClient) -> str:
    return client.get("/metrics").text


def send(ws: Any, message: dict[str, Any] | str) -> None:
    ws.send_text(message if isinstance(message, str) else orjson.dumps(message).decode())


def test_hello_gets_keywords_and_dwell_gets_a_popin(client: TestClient) -> None:
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        send(ws, hello())
        config = ws.receive_json()
        assert config["type"] == "config"
        assert config["watch"] == [{"name": "waxing", "words": ["waxing"], "selector": "",
                                    "seconds": [5.0]}]
        send(ws, {"type": "pageview", "url": "http://testserver/demo/skis.html"})
        send(ws, {"type": "dwell", "keyword": "waxing", "seconds": 5})
        shown = ws.receive_json()
        assert shown["type"] == "show" and shown["rule"] == "wax"
        assert "About waxing" in shown["html"]
        send(ws, {"type": "popin", "id": shown["id"], "status": "dismissed"})
        send(ws, "barrier")
        assert ws.receive_json()["code"] == "bad_json"
    assert 'kind="popin.dismissed"} 1' in metrics(client)


def test_profile_is_persisted_in_the_store(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client, \
            client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        send(ws, hello())
        ws.receive_json()
        send(ws, {"type": "dwell", "keyword": "waxing", "seconds": 5})
        push = ws.receive_json()
        send(ws, {"type": "popin", "id": push["id"], "status": "dismissed"})
        send(ws, "barrier")
        ws.receive_json()

    async def stored() -> Any:
        store = open_store(settings.store)
        try:
            return await store.load_profile("demo", VISITOR)
        finally:
            await store.close()

    profile = run(stored())
    assert profile.visits == 1
    assert profile.interests == {"waxing": 5.0}
    assert profile.popins["wax"].dismissed is not None
    assert len(profile.popins["wax"].shown) == 1


@pytest.mark.parametrize(("path", "headers", "code"), [
    ("/ws?site=nope", ORIGIN, 4004),
    ("/ws", ORIGIN, 4004),
    ("/ws?site=demo", {"origin": "https://evil.example"}, 4003),
    ("/ws?site=demo", {}, 4003),
    ("/ws?site=shop", ORIGIN, 4003),
    ("/ws?site=demo", {"origin": "http://[::1"}, 4003),  # urlsplit raises on it
])
def test_unknown_keys_and_foreign_origins_are_refused(
        client: TestClient, path: str, headers: dict[str, str], code: int) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(
            path, headers=headers):
        pass
    assert refused.value.code == code
    assert "refused." in metrics(client)


def test_listed_origin_is_welcome(client: TestClient) -> None:
    shop = {"origin": "https://shop.example"}
    with client.websocket_connect("/ws?site=shop", headers=shop) as ws:
        send(ws, hello())
        assert ws.receive_json()["type"] == "config"


def test_bad_messages_get_error_frames_and_the_socket_carries_on(client: TestClient) -> None:
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        send(ws, {"type": "pageview", "url": "http://testserver/"})
        assert ws.receive_json()["code"] == "not_ready"
        send(ws, hello())
        assert ws.receive_json()["type"] == "config"
        for bad, code in [("{", "bad_json"), ('{"type":"warp"}', "unknown_type"),
                          ("x" * (MAX_MESSAGE_BYTES + 1), "too_big"),
                          (orjson.dumps(hello()).decode(), "bad_message"),
                          ('{"type":"dwell","keyword":"waxing","seconds":"5"}', "bad_field")]:
            send(ws, bad)
            error = ws.receive_json()
            assert (error["type"], error["code"]) == ("error", code)
        ws.send_bytes(orjson.dumps({"type": "event", "name": "add_to_cart",
                                    "props": {"name": "Skis"}}))
        assert ws.receive_json()["rule"] == "cart"
    text = metrics(client)
    for code in ("not_ready", "bad_json", "unknown_type", "too_big", "bad_message", "bad_field"):
        assert f'kind="error.{code}"}} 1' in text


def test_a_client_that_keeps_misbehaving_is_closed(client: TestClient) -> None:
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        for _ in range(MAX_ERRORS_PER_CONNECTION):
            send(ws, "garbage")
            ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    # The server is unharmed.
    assert client.get("/healthz").json()["ok"] is True


def test_reconnect_resumes_the_session_and_its_caps(client: TestClient) -> None:
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        send(ws, hello())
        ws.receive_json()
        send(ws, {"type": "event", "name": "add_to_cart", "props": {"name": "Skis"}})
        push = ws.receive_json()
        send(ws, {"type": "popin", "id": push["id"], "status": "clicked"})
        send(ws, "barrier")  # the ack is stored before this socket goes
        assert ws.receive_json()["code"] == "bad_json"
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        send(ws, hello())
        ws.receive_json()
        send(ws, {"type": "event", "name": "add_to_cart", "props": {"name": "Skis"}})
        send(ws, "barrier")
        assert ws.receive_json()["code"] == "bad_json"
    text = metrics(client)
    assert 'kind="session.resumed"} 1' in text
    assert 'kind="suppressed.cap_session"} 1' in text
    assert client.get("/healthz").json()["sessions"] == 1


def test_a_new_session_is_a_new_visit(client: TestClient) -> None:
    for session in ("session-0001", "session-0002"):
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
            send(ws, hello(session))
            ws.receive_json()
    hub = client.app.state.hub  # type: ignore[attr-defined]
    sessions = list(hub._sessions.values())
    assert len(sessions) == 2
    # Both sessions of one visitor share one profile object: neither overwrites the other.
    assert sessions[0].profile is sessions[1].profile
    assert sessions[0].profile.visits == 2
    assert 'kind="visit"} 2' in metrics(client)


def test_widget_script_and_demo_are_served(client: TestClient) -> None:
    script = client.get("/popin.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "WebSocket" in script.text
    page = client.get("/demo/")
    assert page.status_code == 200
    assert 'src="/popin.js" data-site="demo"' in page.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/demo/"


def test_consent_tool_signals_are_checked_counted_and_answered(client: TestClient) -> None:
    """The consent message decides what is kept: a forged or sloppy one is an error frame,
    counted; a good one is answered with what the widget may keep."""
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        send(ws, {**hello(), "cmp": True})
        # A consent tool is on the page: nothing is kept until it speaks.
        assert ws.receive_json()["remember"] is False
        for bad in ({"type": "consent", "source": "tcf", "applies": True, "purposes": [1],
                     "vendors": [755]},
                    {"type": "consent", "source": "tcf", "applies": True, "purposes": ["1"]},
                    {"type": "consent", "source": "gcm", "states": {"ad_storage": True}},
                    {"type": "consent", "source": "gcm", "states": {}, "granted": True}):
            send(ws, bad)
            error = ws.receive_json()
            assert (error["type"], error["code"]) == ("error", "bad_field")
        send(ws, {"type": "consent", "source": "tcf", "applies": True, "purposes": [1, 3, 4]})
        assert ws.receive_json() == {"type": "consent", "remember": True}
        send(ws, {"type": "consent", "source": "gcm", "states": {"analytics_storage": "denied"}})
        assert ws.receive_json() == {"type": "consent", "remember": False}
    text = metrics(client)
    assert 'kind="error.bad_field"} 4' in text
    assert 'kind="consent.tcf"} 1' in text and 'kind="consent.gcm"} 1' in text
    assert client.get("/popin-consent.js").headers["content-type"].startswith("text/javascript")


def test_in_session_timers_fire_without_another_message(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "t.yaml").write_text(
        "rules:\n  - id: hesitation\n"
        "    trigger: {after: {event: add_to_cart, without: checkout_started, within: 0.3}}\n"
        "    popin: {title: \"Any questions?\", body: b}\n")
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=tmp_path / "rules")
    with TestClient(create_app(settings)) as client, \
            client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        send(ws, hello())
        ws.receive_json()
        send(ws, {"type": "event", "name": "add_to_cart", "props": {"sku": "skis"}})
        shown = ws.receive_json()  # nothing else is sent: the timer wakes the socket
        assert shown["rule"] == "hesitation"
        send(ws, {"type": "event", "name": "add_to_cart", "props": {"sku": "wax"}})
        send(ws, {"type": "event", "name": "checkout_started"})
        send(ws, "barrier")
        assert ws.receive_json()["code"] == "bad_json"


def test_a_signed_preview_shows_the_pop_in_and_counts_nothing(client: TestClient) -> None:
    hub = client.app.state.hub  # type: ignore[attr-defined]
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        send(ws, hello())
        ws.receive_json()
        send(ws, {"type": "pageview", "url": "http://testserver/demo/skis.html"})
        # Its trigger (a dwell on waxing) never happened; the sample says what it would be.
        send(ws, {"type": "preview", "token": hub.previews.token("demo", "wax")})
        shown = ws.receive_json()
        assert shown["type"] == "show" and shown["preview"] is True and shown["rule"] == "wax"
        assert "About waxing" in shown["html"]
        send(ws, {"type": "popin", "id": shown["id"], "status": "shown"})
        send(ws, {"type": "popin", "id": shown["id"], "status": "dismissed"})
        bad = [hub.previews.token("shop", "wax"),  # another site's
               hub.previews.token("demo", "gone"),  # no such rule
               hub.previews.token("demo", "wax")[:-4] + "AAAA",  # forged
               "x" * 401]  # too long
        for token in bad:
            send(ws, {"type": "preview", "token": token})
            error = ws.receive_json()
            assert error["type"] == "error" and error["field"] == "token", token
    text = metrics(client)
    assert 'kind="preview.shown"} 1' in text
    assert "popin.shown" not in text and "popin.dismissed" not in text
    assert "status.unknown_push" not in text
    run(hub.flush())
    assert run(hub.store.stats_read("demo", "2000-01-01", "2100-01-01")) == []


def test_a_batch_is_read_as_its_messages_in_order(client: TestClient) -> None:
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        # The hello may open a batch: the widget sends what it queued before the socket
        # (up to 50), after its consent tools' last word.
        ws.send_text(orjson.dumps([hello(), {"type": "consent", "granted": True},
                                   {"type": "consent", "granted": True},
                                   *[{"type": "idle", "seconds": 1}] * 49,
                                   {"type": "pageview",
                                    "url": "http://testserver/demo/skis.html"}]).decode())
        assert ws.receive_json()["type"] == "config"
        ws.send_text(orjson.dumps([
            {"type": "scroll", "percent": 300},
            {"type": "dwell", "keyword": "waxing", "seconds": 5},
        ]).decode())
        # Each message on its own: the bad one answered, the next one still read.
        assert ws.receive_json()["field"] == "percent"
        shown = ws.receive_json()
        assert shown["type"] == "show" and shown["rule"] == "wax"
        send(ws, {"type": "popin", "id": shown["id"], "status": "shown"})
        ws.send_text(orjson.dumps([{"type": "idle", "seconds": 1}] * 65).decode())
        assert ws.receive_json()["code"] == "bad_message"
        ws.send_text("[]")
        assert ws.receive_json()["code"] == "bad_message"
    assert 'kind="popin.shown"} 1' in metrics(client)


def test_events_taken_as_the_socket_closes_are_kept(tmp_path: Path) -> None:
    """The socket closes (the visitor leaves at once, or uvicorn closes every socket at a
    stop) while its last frames wait to be read: the hello is taken but its answer cannot
    leave. What the hello and the frames after it change must be written all the same;
    the failed send dropped them, and the profile was never stored."""
    from uvicorn.protocols.utils import ClientDisconnected

    from popin.config import Limits
    from popin.live.hub import Hub
    from popin.web.limits import Admission
    from popin.web.socket import widget_socket

    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'popin.db'}")
        await store.open()
        hub = Hub(store, {}, {"demo": Site("demo")})
        dwell = {"type": "dwell", "keyword": "waxing", "seconds": 5}
        frames = [{"type": "websocket.connect"},
                  {"type": "websocket.receive", "text": orjson.dumps(hello()).decode()},
                  {"type": "websocket.receive", "text": orjson.dumps(dwell).decode()},
                  {"type": "websocket.disconnect", "code": 1012}]

        async def receive() -> dict[str, Any]:
            return frames.pop(0)

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                raise ClientDisconnected  # closed meanwhile

        scope = {"type": "websocket", "path": "/ws", "query_string": b"site=demo",
                 "client": ("127.0.0.1", 50000),
                 "headers": [(b"host", b"testserver"), (b"origin", b"http://testserver")]}
        await widget_socket(hub, Admission(Limits()), Limits(), scope, receive, send)
        assert frames == [], "frames received before the disconnect were left unread"
        await hub.flush()
        stored = await store.load_profile("demo", VISITOR)
        assert stored is not None and stored.visits == 1, "the hello's visit was lost"
        assert stored.interests == {"waxing": 5.0}, "the dwell after it was lost"
        await store.close()

    run(scenario())


def test_a_store_failing_at_hello_closes_with_a_frame_or_carries_on(
        client: TestClient) -> None:
    """Redis restarting: a hello whose profile cannot be read is closed with 1013 (try
    later), counted; one whose outbox cannot be read carries on without it. Neither socket
    is dropped without a close frame by an exception escaping the application."""
    hub = client.app.state.hub  # type: ignore[attr-defined]

    async def broken(*args: Any) -> Any:
        raise ConnectionError("Connection closed by server.")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hub.store, "load_profile", broken)
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
            send(ws, hello())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 1013
        assert hub.counts["closed.store"] == 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hub.store, "outbox_list", broken)
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
            send(ws, hello("session-0002"))
            assert ws.receive_json()["type"] == "config"
            send(ws, {"type": "dwell", "keyword": "waxing", "seconds": 5})
            assert ws.receive_json()["rule"] == "wax", "the socket goes on"
        assert hub.counts["outbox.unread"] == 1
