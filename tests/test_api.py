"""The backend API: keys and scopes, events live and deferred, identify, erasure, and
the whole API checked against its own OpenAPI description by schemathesis."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import LOOPBACK, make_key, run, settings_with_rules
from popin.config import Settings
from popin.core.site import Site
from popin.web.api import routes
from popin.web.api.openapi import document
from popin.web.app import create_app

RULES = """
rules:
  - id: satisfaction
    category: transactional
    trigger: {event: purchase}
    popin: {title: "How was your purchase?", body: "<p>{{ trigger.props.sku }}</p>"}
  - id: welcome
    category: transactional
    trigger: {event: signup}
    expires: 2d
    popin: {title: "Welcome {{ visitor.first_name }}!", body: b}
"""
ORIGIN = {"origin": "http://testserver"}


IDENTITY_SECRET = "demo-identity-secret-0123456789"


@pytest.fixture
def settings_(tmp_path: Path) -> Settings:
    return settings_with_rules(tmp_path, RULES, sites={
        "demo": Site("demo", "Demo shop", identity_secret=IDENTITY_SECRET)})


@pytest.fixture
def client(settings_: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings_), client=LOOPBACK) as test_client:
        yield test_client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hello(visitor: str, session: str = "session-0001") -> str:
    return orjson.dumps({"type": "hello", "visitor": visitor, "session": session,
                         "url": "http://testserver/demo/"}).decode()


def test_keys_and_scopes(client: TestClient, settings_: Settings) -> None:
    events = make_key(settings_, "events")
    export = make_key(settings_, "export")
    revoked = make_key(settings_, "events", revoked=True)
    body = {"events": [{"name": "purchase", "visitor": "visitor-0001"}]}
    missing = client.post("/api/v1/events", json=body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert missing.json()["error"]["field"] == "Authorization", "the header to send"
    assert missing.headers["www-authenticate"] == "Bearer"
    for token in ("pk_wrong", revoked):
        response = client.post("/api/v1/events", json=body, headers=auth(token))
        assert response.status_code == 401
        assert response.json() == {"error": {"code": "unauthorized",
                                             "message": "this API key is not valid",
                                             "field": "Authorization"}}
    forbidden = client.post("/api/v1/events", json=body, headers=auth(export))
    assert forbidden.status_code == 403
    assert "lacks the 'events' scope" in forbidden.json()["error"]["message"]
    # The key is what to change, as every 4xx names what to change.
    assert forbidden.json()["error"]["field"] == "Authorization"
    assert client.get("/api/v1/visitors/visitor-0001", headers=auth(events)).status_code == 403
    assert client.post("/api/v1/events", json=body, headers=auth(events)).status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    (b"{", "body"),
    ({"events": []}, "events"),
    ({"events": [{"name": "x"}]}, "events[0].visitor"),
    ({"events": [{"name": "x", "visitor": "visitor-0001", "user_id": "u"}]},
     "events[0].visitor"),
    ({"events": [{"name": "x", "visitor": "visitor-0001"}, {"name": "bad name!",
                                                            "visitor": "visitor-0001"}]},
     "events[1].name"),
    ({"events": [{"name": "x", "visitor": "short"}]}, "events[0].visitor"),
    ({"events": [{"name": "x", "visitor": "visitor-0001", "props": {"a": [1]}}]},
     "events[0].props.a"),
    ({"events": [{"name": "x", "visitor": "visitor-0001", "color": "red"}]},
     "events[0].color"),
    ({"events": [{"name": "x", "visitor": "visitor-0001", "time": "yesterday"}]},
     "events[0].time"),
    # Milliseconds, garbage, or a time before popin could have seen anything: refused, not
    # applied as if it were now.
    ({"events": [{"name": "x", "visitor": "visitor-0001", "time": 1e300}]}, "events[0].time"),
    ({"events": [{"name": "x", "visitor": "visitor-0001", "time": -1e12}]}, "events[0].time"),
    ({"events": [{"name": "x", "visitor": "visitor-0001", "time": 1.0}]}, "events[0].time"),
    ({"events": [{"name": "x", "visitor": "visitor-0001",
                  "time": time.time() * 1000}]}, "events[0].time"),
    ({"events": [{"name": "x", "visitor": "visitor-0001",
                  "time": time.time() + 2 * 86400}]}, "events[0].time"),
    # orjson refuses what would parse as infinity: the body as a whole is not JSON.
    (b'{"events": [{"name": "x", "visitor": "visitor-0001", "time": 1e400}]}', "body"),
    (b'{"events": [{"name": "x", "visitor": "visitor-0001", "time": NaN}]}', "body"),
])
def test_bad_input_names_the_field_and_applies_nothing(
        client: TestClient, settings_: Settings, body: Any, field: str) -> None:
    token = make_key(settings_, "events")
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = client.post("/api/v1/events", content=content, headers=auth(token))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert 'kind="api.event"' not in client.get("/metrics").text


def test_a_body_over_the_limit_names_the_body(client: TestClient, settings_: Settings) -> None:
    token = make_key(settings_, "events")
    padding = " " * routes.MAX_BODY_BYTES
    for headers in ({}, {"transfer-encoding": "chunked"}):
        content: Any = (b'{"events": []}' + padding.encode() if not headers
                        else iter([b'{"events": []}', padding.encode()]))
        response = client.post("/api/v1/events", content=content,
                               headers={**auth(token), **headers})
        assert response.status_code == 413
        assert response.json()["error"] | {"code": "too_large", "field": "body"} == \
            response.json()["error"]


def test_purchase_for_a_connected_visitor_arrives_live(client: TestClient,
                                                       settings_: Settings) -> None:
    token = make_key(settings_, "events")
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(hello("visitor-live-1"))
        ws.receive_json()
        response = client.post("/api/v1/events", headers=auth(token), json={"events": [
            {"name": "purchase", "visitor": "visitor-live-1", "props": {"sku": "skis"},
             "idempotency_key": "order-1001"}]})
        assert response.json()["results"] == [{"index": 0, "status": "applied",
                                               "visitor": "visitor-live-1",
                                               "shown_live": 1, "queued": 0}]
        shown = ws.receive_json()
        assert shown["rule"] == "satisfaction" and "skis" in shown["html"]
        # A retried request is applied once.
        again = client.post("/api/v1/events", headers=auth(token), json={"events": [
            {"name": "purchase", "visitor": "visitor-live-1", "props": {"sku": "skis"},
             "idempotency_key": "order-1001"}]})
        assert again.json()["results"][0]["status"] == "duplicate"


def test_an_idempotency_key_reused_for_another_event_is_refused(
        client: TestClient, settings_: Settings) -> None:
    token = make_key(settings_, "events")
    order = {"name": "purchase", "visitor": "visitor-idem-1", "props": {"sku": "skis"},
             "idempotency_key": "order-2002"}
    first = client.post("/api/v1/events", headers=auth(token), json={"events": [order]})
    assert first.json()["results"][0]["status"] == "applied"
    # The same event again, its keys in another order: a retry, applied once.
    retried = client.post("/api/v1/events", headers=auth(token), json={"events": [
        dict(reversed(list(order.items())))]})
    assert retried.status_code == 200
    assert retried.json()["results"][0]["status"] == "duplicate"
    # The same key for another event: a mistake of the caller, not a retry.
    other = {**order, "props": {"sku": "wax"}}
    fresh = {"name": "purchase", "visitor": "visitor-idem-1", "idempotency_key": "order-2003"}
    refused = client.post("/api/v1/events", headers=auth(token), json={"events": [
        fresh, other]})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    assert refused.json()["error"]["field"] == "events[1].idempotency_key"
    assert 'popin_events_total{kind="api.event"} 1.0\n' in client.get("/metrics").text, \
        "nothing of it was applied"
    # Refused as a whole, the batch claimed nothing: its good event is still new.
    alone = client.post("/api/v1/events", headers=auth(token), json={"events": [fresh]})
    assert alone.json()["results"][0]["status"] == "applied"
    for when in (1.7e9, 1.7e9 + 1):
        timed = client.post("/api/v1/events", headers=auth(token), json={"events": [
            {**fresh, "idempotency_key": "order-2004", "time": when}]})
        assert timed.status_code == (200 if when == 1.7e9 else 409)


def test_a_key_claimed_by_a_worker_that_died_before_storing_is_applied_by_the_retry(
        client: TestClient, settings_: Settings) -> None:
    """A worker killed between its claim and its write never answered 2xx: the retry is
    told to wait while the claim may still be at work, then applies the event."""
    token = make_key(settings_, "events")
    store = client.app.state.hub.store  # type: ignore[attr-defined]
    item = {"name": "signup", "visitor": "visitor-died-1", "idempotency_key": "signup-died"}
    # What the dead worker left: a pending claim, nothing written (a short lease here).
    digest = routes._digest(routes._event(item, 0, time.time()))
    assert run(store.claim("demo", [("event:signup-died", digest)], 60, lease=0.3)) == [
        "claimed"]
    early = client.post("/api/v1/events", headers=auth(token), json={"events": [item]})
    assert early.status_code == 503
    assert early.json()["error"]["code"] == "in_progress"
    assert early.headers["Retry-After"] == "10"
    time.sleep(0.4)
    retried = client.post("/api/v1/events", headers=auth(token), json={"events": [item]})
    assert retried.json()["results"][0] | {"status": "applied", "queued": 1} == \
        retried.json()["results"][0], retried.text
    assert client.post("/api/v1/events", headers=auth(token), json={"events": [item]}).json()[
        "results"][0]["status"] == "duplicate"
    run(client.app.state.hub.flush())  # type: ignore[attr-defined]
    assert len(run(store.outbox_list("demo", "visitor-died-1", 0.0))) == 1


def test_an_event_the_store_cannot_keep_is_refused_and_its_retry_applied(
        client: TestClient, settings_: Settings) -> None:
    token = make_key(settings_, "events")
    store = client.app.state.hub.store  # type: ignore[attr-defined]
    working = store.outbox_put

    async def disk_full(*_args: Any) -> None:
        raise OSError("database or disk is full")

    store.outbox_put = disk_full
    batch = {"events": [{"name": "signup", "visitor": "visitor-full-1",
                         "idempotency_key": "signup-full-1"}]}
    refused = client.post("/api/v1/events", headers=auth(token), json=batch)
    assert refused.status_code == 503, "a pop-in kept only in memory is not acknowledged"
    assert refused.json()["error"] == {
        "code": "unavailable", "field": "events[0]",
        "message": "the store could not keep this event; events before index 0 were "
                   "applied, retry the batch with the same idempotency keys"}
    store.outbox_put = working
    retried = client.post("/api/v1/events", headers=auth(token), json=batch)
    assert retried.json()["results"][0] | {"status": "applied", "queued": 1} == \
        retried.json()["results"][0], "the failed attempt did not use up the key"
    assert client.post("/api/v1/events", headers=auth(token), json=batch).json()[
        "results"][0]["status"] == "duplicate"
    run(client.app.state.hub.flush())  # type: ignore[attr-defined]
    assert len(run(store.outbox_list("demo", "visitor-full-1", 0.0))) == 1, \
        "the refused attempt left no pop-in behind"


def test_signup_for_an_offline_visitor_shows_at_the_next_visit_once(
        client: TestClient, settings_: Settings) -> None:
    token = make_key(settings_, "events")
    response = client.post("/api/v1/events", headers=auth(token), json={"events": [
        {"name": "signup", "visitor": "visitor-away-1"}]})
    assert response.json()["results"][0]["queued"] == 1
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(hello("visitor-away-1"))
        assert ws.receive_json()["type"] == "config"
        shown = ws.receive_json()
        assert shown["rule"] == "welcome"
        # The socket drops before the widget acknowledges: it is sent again.
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(hello("visitor-away-1"))
        ws.receive_json()
        again = ws.receive_json()
        assert again["id"] == shown["id"]
        ws.send_text(orjson.dumps({"type": "popin", "id": again["id"],
                                   "status": "shown"}).decode())
        ws.send_text("barrier")
        assert ws.receive_json()["code"] == "bad_json"
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(hello("visitor-away-1", "session-0002"))
        ws.receive_json()
        ws.send_text("barrier")
        assert ws.receive_json()["code"] == "bad_json", "shown twice"


def frames_until_barrier(ws: Any) -> list[dict[str, Any]]:
    """What the server sent before it answered a deliberately bad frame."""
    ws.send_text("barrier")
    frames = []
    while (frame := ws.receive_json())["type"] != "error":
        frames.append(frame)
    return frames


def test_a_push_for_a_visitor_with_two_tabs_shows_in_the_tab_they_used_last(
        client: TestClient, settings_: Settings) -> None:
    token = make_key(settings_, "events")
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as first, \
            client.websocket_connect("/ws?site=demo", headers=ORIGIN) as second:
        first.send_text(hello("visitor-tabs-1", "session-tab-1"))
        frames_until_barrier(first)
        second.send_text(hello("visitor-tabs-1", "session-tab-2"))
        frames_until_barrier(second)
        time.sleep(0.01)
        first.send_text(orjson.dumps({"type": "pageview",
                                      "url": "http://testserver/demo/wax.html"}).decode())
        frames_until_barrier(first)
        response = client.post("/api/v1/events", headers=auth(token), json={"events": [
            {"name": "purchase", "visitor": "visitor-tabs-1", "props": {"sku": "skis"}}]})
        assert response.json()["results"][0]["shown_live"] == 1
        shows = [[frame for frame in frames_until_barrier(ws) if frame["type"] == "show"]
                 for ws in (first, second)]
        assert [len(found) for found in shows] == [1, 0]


@pytest.mark.parametrize("sessions", [("session-tab-1", "session-tab-2"),
                                      ("session-tab-1", "session-tab-1")],
                         ids=["own sessions", "one visit"])
def test_a_waiting_push_shows_in_one_of_two_tabs_opened_together(
        client: TestClient, settings_: Settings, sessions: tuple[str, str]) -> None:
    """Tabs of one visit share its session (the widget keeps it in localStorage)."""
    token = make_key(settings_, "events")
    response = client.post("/api/v1/events", headers=auth(token), json={"events": [
        {"name": "signup", "visitor": "visitor-tabs-2"}]})
    assert response.json()["results"][0]["queued"] == 1
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as first, \
            client.websocket_connect("/ws?site=demo", headers=ORIGIN) as second:
        first.send_text(hello("visitor-tabs-2", sessions[0]))
        second.send_text(hello("visitor-tabs-2", sessions[1]))
        shows = [frame for ws in (first, second) for frame in frames_until_barrier(ws)
                 if frame["type"] == "show"]
        assert [frame["rule"] for frame in shows] == ["welcome"]


def test_identify_hashes_contacts_and_converges_devices(
        client: TestClient, settings_: Settings) -> None:
    token = make_key(settings_, "events", "profiles")
    first = client.post("/api/v1/identify", headers=auth(token), json={
        "visitor": "visitor-laptop", "user_id": "user-42",
        "traits": {"first_name": "Léa", "email": "  Lea.Martin@Example.COM ",
                   "phone": "06 12 34 56 78", "birthday": "1990-11-23"}})
    answer = first.json()
    assert answer.pop("note").startswith("popin had never seen visitor 'visitor-laptop'")
    assert answer == {"visitor": "visitor-laptop", "user_id": "user-42", "new_visitor": True,
                      "stored": ["birthday", "email_google_sha256", "email_sha256",
                                 "first_name", "phone_digits_sha256", "phone_sha256"]}
    bad = client.post("/api/v1/identify", headers=auth(token), json={
        "visitor": "visitor-laptop", "user_id": "user-42", "traits": {"email": "not-mail"}})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "traits.email"
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(hello("visitor-phone"))
        ws.receive_json()
        signed = hmac.new(IDENTITY_SECRET.encode(), b"user-42", hashlib.sha256).hexdigest()
        ws.send_text(orjson.dumps({"type": "identify", "user_id": "user-42",
                                   "traits": {}, "user_hash": signed}).decode())
        assert ws.receive_json() == {"type": "identity", "visitor": "visitor-laptop"}
        ws.send_text('{"type": "event", "name": "purchase", "props": {"sku": "wax"}}')
        assert ws.receive_json()["rule"] == "satisfaction"
    profile = client.get("/api/v1/users/user-42", headers=auth(token)).json()
    assert profile["visitor"] == "visitor-laptop" and profile["visits"] == 1
    assert profile["first_name"] == "Léa"
    assert profile["email_sha256"] == hashlib.sha256(b"lea.martin@example.com").hexdigest()
    assert profile["phone_sha256"] == hashlib.sha256(b"+33612345678").hexdigest()
    assert profile["phone_digits_sha256"] == hashlib.sha256(b"33612345678").hexdigest()
    assert profile["email_google_sha256"] == profile["email_sha256"], "not a Gmail address"
    assert client.get("/api/v1/visitors/visitor-phone", headers=auth(token)).status_code == 404
    database = Path(settings_.store.removeprefix("sqlite:///")).read_bytes()
    assert b"example.com" not in database.lower() and b"612345678" not in database


def test_erasure_leaves_nothing_behind(client: TestClient, settings_: Settings) -> None:
    token = make_key(settings_, "events", "profiles")
    client.post("/api/v1/identify", headers=auth(token), json={
        "visitor": "visitor-gone-1", "user_id": "user-7", "traits": {"first_name": "Sam"}})
    client.post("/api/v1/events", headers=auth(token), json={"events": [
        {"name": "signup", "visitor": "visitor-gone-1"}]})
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(hello("visitor-gone-1"))
        ws.receive_json()
        ws.receive_json()  # the welcome, not acknowledged
        assert client.delete("/api/v1/users/user-7", headers=auth(token)).status_code == 204
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4010
    assert client.get("/api/v1/visitors/visitor-gone-1", headers=auth(token)).status_code == 404
    assert client.get("/api/v1/users/user-7", headers=auth(token)).status_code == 404
    db = sqlite3.connect(settings_.store.removeprefix("sqlite:///"))
    for table in ("profiles", "users", "outbox", "deliveries"):
        rows = db.execute(f"SELECT count(*) FROM {table} WHERE visitor = ?",
                          ("visitor-gone-1",)).fetchone()[0]
        assert rows == 0, f"{table} still holds the erased visitor"
    db.close()


def test_unknown_visitors_and_users_are_answered_alike(client: TestClient,
                                                       settings_: Settings) -> None:
    """A read of either is a 404 naming the field; an erasure of either is an idempotent
    204, as a retried erasure is."""
    token = make_key(settings_, "profiles")
    for path, field in (("/api/v1/visitors/never-seen-1", "visitor"),
                        ("/api/v1/users/never-seen-user", "user_id")):
        read = client.get(path, headers=auth(token))
        assert read.status_code == 404, path
        assert read.json()["error"]["code"] == "not_found"
        assert read.json()["error"]["field"] == field
        assert client.delete(path, headers=auth(token)).status_code == 204, path
        assert client.delete(path, headers=auth(token)).status_code == 204, "idempotent"
    paths = document()["paths"]
    for path in ("/api/v1/visitors/{visitor}", "/api/v1/users/{user_id}"):
        assert "404" in paths[path]["get"]["responses"]
        assert set(paths[path]["delete"]["responses"]) == {"204", "400", "401", "403", "503"}


def test_identify_says_when_the_visitor_id_was_never_seen(
        client: TestClient, settings_: Settings) -> None:
    """A placeholder id is not special (any well-formed id may be linked before its first
    page), but the answer says popin had never met it; a visitor it knows is no news."""
    token = make_key(settings_, "events", "profiles")
    copied = client.post("/api/v1/identify", headers=auth(token), json={
        "visitor": "VISITOR_ID", "user_id": "user-1"}).json()
    assert copied["new_visitor"] is True and "never seen visitor 'VISITOR_ID'" in copied["note"]
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(hello("visitor-seen-1"))
        ws.receive_json()
        known = client.post("/api/v1/identify", headers=auth(token), json={
            "visitor": "visitor-seen-1", "user_id": "user-2"}).json()
    assert known["new_visitor"] is False and "note" not in known
    again = client.post("/api/v1/identify", headers=auth(token), json={
        "visitor": "VISITOR_ID", "user_id": "user-1"}).json()
    assert again["new_visitor"] is False, "linked once, it is known"


def test_unknown_api_paths_answer_json(client: TestClient, settings_: Settings) -> None:
    response = client.get("/api/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert response.json()["error"]["field"] == "path"
    # A path parameter holding '/' matches no route: the path is what is wrong.
    token = make_key(settings_, "profiles")
    escaped = client.get("/api/v1/visitors/..%2f..%2fx", headers=auth(token))
    assert escaped.status_code == 404
    assert escaped.json()["error"] == {"code": "not_found", "message": "Not Found",
                                       "field": "path"}
    wrong_method = client.get("/api/v1/events")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["field"] == "method"
    assert "POST" in wrong_method.headers["allow"]
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")


@pytest.mark.parametrize("path", sorted(document()["paths"]))
def test_api_matches_its_openapi(settings_: Settings, path: str) -> None:
    """schemathesis generates requests from the document, valid and invalid, and checks
    every answer against it (status codes, bodies, content types, no server error)."""
    token = make_key(settings_, "events", "profiles", "export")
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings_))

    @schema.auth()
    class Key:
        """The key as schemathesis's credential: it never generates one of its own."""

        def get(self, case: Any, context: Any) -> str:
            return token

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), **auth(data)}

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in [op for op in operations if op.path == path]:

        @given(case=strategies.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)))
        @settings(max_examples=60, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def check(case: Any) -> None:
            # Valid-looking input may still be refused for what a schema cannot say (an
            # e-mail that does not parse, a phone number that cannot exist): a 400 naming
            # the field, so "positive data acceptance" is off; every other check is on.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()


@pytest.mark.parametrize("query", ["status=dead&color=red", "status=dead&status=pending",
                                   "status=gone"])
def test_query_parameters_are_checked(client: TestClient, settings_: Settings,
                                      query: str) -> None:
    token = make_key(settings_, "events")
    response = client.get(f"/api/v1/webhooks?{query}", headers=auth(token))
    assert response.status_code == 400
    assert response.json()["error"]["field"] in ("color", "status")


def test_keys_from_the_command_line(client: TestClient, settings_: Settings,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from popin.cli import main

    store = ["--store", settings_.store]
    assert main(["keys", *store, "create", "--scope", "export", "--label", "ads sync"]) == 0
    created = capsys.readouterr().out
    token = created.split("keep it secret): ")[1].strip()
    key_id = created.split()[1]
    assert client.get("/api/v1/audiences", headers=auth(token)).status_code == 200
    assert main(["keys", *store, "list"]) == 0
    assert capsys.readouterr().out.split()[:4] == [key_id, "active", "export", "ads"]
    assert main(["keys", *store, "revoke", key_id]) == 0
    assert client.get("/api/v1/audiences", headers=auth(token)).status_code == 401
    assert main(["keys", *store, "revoke", "no-such-key"]) == 1
    assert main(["keys", *store, "--site", "elsewhere", "list"]) == 2


def test_conversions_from_the_backend_are_confirmed_and_pages_cannot_confirm(
        tmp_path: Path) -> None:
    """The campaign guard acts on conversions the site's backend sent: an order posted
    with the API key counts as converted and as converted_confirmed; the same event from
    the page (or a page claiming 'confirmed') counts as converted only."""
    settings_ = settings_with_rules(tmp_path, """
rules:
  - {id: offer, trigger: {event: go}, holdout: 0, popin: {title: t, body: b},
     conversion: {event: order_placed, within: 1d}}
""")
    token = make_key(settings_, "events")
    with TestClient(create_app(settings_), client=LOOPBACK) as client:
        for visitor, by_api in (("visitor-api-0001", True), ("visitor-page-001", False)):
            with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
                ws.send_text(hello(visitor))
                ws.receive_json()
                ws.send_text('{"type": "event", "name": "go"}')
                assert ws.receive_json()["type"] == "show"
                if not by_api:
                    ws.send_text('{"type": "event", "name": "order_placed", '
                                 '"props": {"value": 10}, "confirmed": true}')
                ws.send_text("barrier")
                ws.receive_json()
            if by_api:
                response = client.post("/api/v1/events", headers=auth(token), json={
                    "events": [{"visitor": visitor, "name": "order_placed",
                                "props": {"value": 10}}]})
                assert response.status_code == 200, response.text
        hub = client.app.state.hub  # type: ignore[attr-defined]
        from conftest import run

        run(hub.flush())
        rows = run(hub.store.stats_read("demo", "2000-01-01", "2100-01-01"))
    totals: dict[str, float] = {}
    for _day, rule, metric, value in rows:
        if rule == "offer":
            totals[metric] = totals.get(metric, 0.0) + value
    assert totals["exposed"] == 2 and totals["converted"] == 2
    assert totals["converted_confirmed"] == 1
