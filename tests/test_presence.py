"""A visitor reconnecting to another process while the site's backend posts a push for
them: the new holder reads the outbox at hello, the API writes the outbox and then looks
for the visitor's presence. Whatever the interleaving, the push is relayed to the socket
or read from the outbox, never left there until the next reconnect."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from conftest import LOOPBACK, make_key, settings_with_rules, wait_until
from popin.web.app import create_app

RULES = """
rules:
  - id: shipped
    category: transactional
    trigger: {event: shipped}
    popin: {title: "On its way", body: "<p>soon</p>"}
"""
VISITOR = "visitor-between"


@pytest.mark.redis
def test_a_push_posted_between_hello_and_presence_is_relayed(
        tmp_path: Path, redis_url: str) -> None:
    prefix = f"presence-{uuid.uuid4().hex}"
    settings = settings_with_rules(tmp_path, RULES)
    settings.store = f"{redis_url}?prefix={prefix}"
    token = make_key(settings, "events")
    channels = redis.Redis.from_url(redis_url)
    with TestClient(create_app(settings), client=LOOPBACK) as holder, \
            TestClient(create_app(settings), client=LOOPBACK) as api:
        # Both processes listen on their channels before the visitor arrives.
        wait_until(lambda: len(channels.pubsub_channels(f"{prefix}:node:*")) == 2)
        hub = holder.app.state.hub  # type: ignore[attr-defined]
        read = hub.store.outbox_list
        answers: list[Any] = []

        async def then_posted(*args: Any) -> Any:
            # The worst moment: the holder has read the outbox (empty), and the push is
            # posted before it would next yield to its presence task.
            waiting = await read(*args)
            answers.append(api.post("/api/v1/events", headers={
                "Authorization": f"Bearer {token}"}, json={"events": [
                    {"name": "shipped", "visitor": VISITOR}]}).json())
            return waiting

        hub.store.outbox_list = then_posted
        relay = hub.peers._inner
        write = relay._write

        async def slowly(*args: Any) -> Any:
            # A busy process: its presence reaches Redis well after the socket is attached.
            await asyncio.sleep(0.3)
            return await write(*args)

        relay._write = slowly
        with holder.websocket_connect("/ws?site=demo",
                                      headers={"origin": "http://testserver"}) as ws:
            ws.send_text(orjson.dumps({"type": "hello", "visitor": VISITOR,
                                       "session": "session-0001",
                                       "url": "http://testserver/demo/"}).decode())
            assert ws.receive_json()["type"] == "config"
            wait_until(lambda: answers)
            assert answers[0]["results"][0]["shown_live"] == 1, \
                "the push found no presence and waits in the outbox"
            shown = ws.receive_json()
            assert (shown["type"], shown["rule"]) == ("show", "shipped")
    channels.close()
