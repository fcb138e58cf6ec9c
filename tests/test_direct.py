"""Frames read as uvicorn's protocol receives them (web.conversation's direct way) behave
as those the socket's task reads: same answers, same order, same writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from conftest import LiveServer, settings_with_rules
from popin.core.site import Site
from popin.web.conversation import Conversation

RULES = """
rules:
  - id: wax
    trigger: {dwell: {keyword: waxing, seconds: 5}}
    popin: {title: "About {{ trigger.keyword }}", body: "<p>kit</p>"}
  - id: cart
    trigger: {event: add_to_cart}
    popin: {title: "{{ trigger.props.name }}", body: b}
  - id: reader
    trigger: {event: read}
    tag: readers
"""
HELLO = {"type": "hello", "visitor": "visitor-direct-1", "session": "session-direct-1",
         "url": "http://127.0.0.1/demo/skis.html"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(settings_with_rules(tmp_path, RULES, sites={"demo": Site(
        "demo", origins=("http://127.0.0.1",), holdout=0)})).start()
    try:
        yield live
    finally:
        live.stop()


def send(ws: ClientConnection, message: Any) -> None:
    ws.send(json.dumps(message))


def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return message


def test_events_read_on_the_spot_answer_in_order(server: LiveServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[bool] = []
    original = Conversation.direct

    def direct(self: Conversation, text: str) -> bool:
        taken.append(original(self, text))
        return taken[-1]

    monkeypatch.setattr(Conversation, "direct", direct)
    with connect(f"ws://127.0.0.1:{server.port}/ws?site=demo",
                 origin="http://127.0.0.1") as ws:  # type: ignore[arg-type]
        send(ws, HELLO)
        assert receive(ws)["type"] == "config"
        send(ws, [{"type": "pageview", "url": "http://127.0.0.1/demo/skis.html"},
                  {"type": "dwell", "keyword": "waxing", "seconds": 5}])
        shown = receive(ws)
        assert shown["rule"] == "wax" and "About waxing" in shown["html"]
        send(ws, {"type": "popin", "id": shown["id"], "status": "shown"})
        # An event answered on the spot, then a mistake only the task answers: in order.
        send(ws, {"type": "event", "name": "add_to_cart", "props": {"name": "Skis"}})
        ws.send("barrier")
        cart = receive(ws)
        assert cart["rule"] == "cart" and "Skis" in cart["html"]
        assert receive(ws)["code"] == "bad_json"
        # A tag needs the store: the rest of the frame waits for it, then follows.
        send(ws, [{"type": "event", "name": "read"}, {"type": "scroll", "percent": 300}])
        assert receive(ws)["field"] == "percent"
        send(ws, {"type": "popin", "id": cart["id"], "status": "clicked"})
        ws.send("barrier")
        assert receive(ws)["code"] == "bad_json"
    # The events took the direct way; the mistakes and the acknowledged pop-in's
    # follow-up were the task's.
    assert taken.count(True) >= 3 and False in taken
    metrics = httpx.get(f"{server.url}/metrics").text
    for line in ('kind="popin.shown"} 1', 'kind="popin.clicked"} 1',
                 'kind="audience.joined"} 1', 'kind="error.bad_json"} 2',
                 'kind="error.bad_field"} 1'):
        assert line in metrics, line
