"""/metrics through prometheus-client: the hub's counters, gauges of what is live, and
histograms of push latency (per push only) and store round trips (per operation); with
`popin serve --workers 2`, any worker's scrape is the sum of both."""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx2
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from websockets.sync.client import connect

from conftest import (
    LOOPBACK,
    api_key,
    free_port,
    make_key,
    serve,
    settings_with_rules,
    socket_holder,
    wait_until,
    workers_of,
)
from popin.web.app import create_app

RULES = """
rules:
  - id: help
    category: transactional
    trigger: {event: asked-help}
    cap: {per_session: 100}
    popin: {title: "Help", body: "<p>here</p>"}
  - id: shipped
    category: transactional
    trigger: {event: shipped}
    cap: {per_session: 100}
    popin: {title: "On its way", body: "<p>{{ trigger.props.parcel }}</p>"}
"""
ORIGIN = {"origin": "http://testserver"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def hello(visitor: str) -> str:
    return orjson.dumps({"type": "hello", "visitor": visitor, "session": f"s-{visitor}",
                         "url": "http://testserver/demo/"}).decode()


def test_pushes_and_store_round_trips_are_timed_ordinary_events_are_not(
        tmp_path: Path) -> None:
    settings = settings_with_rules(tmp_path, RULES)
    token = make_key(settings, "events")
    with TestClient(create_app(settings), client=LOOPBACK) as client, \
            client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(hello("visitor-metrics-1"))
        assert ws.receive_json()["type"] == "config"
        ws.send_text('{"type": "event", "name": "asked-help"}')
        shown = ws.receive_json()
        assert shown["rule"] == "help"
        ws.send_text(orjson.dumps({"type": "popin", "id": shown["id"],
                                   "status": "dismissed"}).decode())
        # Answered in order: the dismissal is handled before the API's push arrives.
        ws.send_text("barrier")
        assert ws.receive_json()["code"] == "bad_json"
        answer = client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                             json={"events": [{"name": "shipped", "visitor": "visitor-metrics-1",
                                               "props": {"parcel": "p-1"}}]})
        assert answer.json()["results"][0]["shown_live"] == 1
        assert ws.receive_json()["rule"] == "shipped"
        before = samples(client.get("/metrics").text)
        for percent in range(1, 41):
            ws.send_text(orjson.dumps({"type": "scroll", "percent": percent}).decode())
        ws.send_text("barrier")
        assert ws.receive_json()["code"] == "bad_json"
        after = samples(client.get("/metrics").text)
    for found in (before, after):
        assert value(found, "popin_push_latency_seconds_count", path="session") == 1
        assert value(found, "popin_push_latency_seconds_count", path="api") == 1
        assert value(found, "popin_live_sockets") == 1
        assert value(found, "popin_live_sessions") == 1
    # The API's push was written to the store before the answer: one outbox_put at least.
    assert value(after, "popin_store_round_trip_seconds_count", operation="outbox_put") >= 1
    assert value(after, "popin_store_round_trip_seconds_bucket", operation="outbox_put",
                 le="+Inf") >= 1
    assert value(after, "popin_events_total", kind="api.event") == 1
    assert value(after, "popin_events_total", kind="error.bad_json") == 2
    latency = value(after, "popin_push_latency_seconds_sum", path="api")
    assert 0 < latency < 5


def test_any_worker_scrape_is_the_sum_of_all(tmp_path: Path, redis_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    config = tmp_path / "popin.toml"
    config.write_text(f'store = "{redis_url}?prefix=metrics-{uuid.uuid4().hex}"\n'
                      'rules = "rules"\n[[sites]]\nkey = "demo"\nholdout = 0\n')
    token = api_key(config, monkeypatch)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(config, port, "--workers", "2")
    try:
        pids = workers_of(server, 2)
        folder = Path(dict(line.split("=", 1) for line in Path(f"/proc/{pids[0]}/environ")
                           .read_text().split("\0") if "=" in line)["PROMETHEUS_MULTIPROC_DIR"])
        assert folder.is_dir()
        with ExitStack() as stack:
            sockets, holders = [], set()
            number = 0
            # Until both workers hold sockets (the kernel spreads connections between them).
            while len(holders) < 2 or len(sockets) < 6:
                assert number < 60, "every socket went to one worker"
                ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws?site=demo",
                                                 origin=url))  # type: ignore[arg-type]
                ws.send(hello(f"visitor-sum-{number:04d}").replace("http://testserver", url))
                assert orjson.loads(ws.recv(timeout=5))["type"] == "config"
                holders.add(socket_holder(ws.socket, port, pids))
                sockets.append(ws)
                number += 1
            time.sleep(0.3)
            for index, ws in enumerate(sockets):
                answer = httpx2.post(f"{url}/api/v1/events",
                                     headers={"Authorization": f"Bearer {token}"},
                                     json={"events": [{"name": "shipped",
                                                       "visitor": f"visitor-sum-{index:04d}",
                                                       "props": {"parcel": f"p-{index}"}}]})
                assert answer.json()["results"][0]["shown_live"] == 1, answer.text
                assert f"p-{index}" in orjson.loads(ws.recv(timeout=2))["html"]

            def summed() -> Samples | None:
                # A new connection each time: either worker answers; both must say the sum
                # (the other worker's counts are copied to its file once a second).
                found = samples(httpx2.get(f"{url}/metrics").text)
                pushes = sum(value(found, "popin_push_latency_seconds_count", path=path)
                             for path in ("api", "relay"))
                return found if (value(found, "popin_live_sockets") == len(sockets)
                                 and pushes == len(sockets) and value(
                                     found, "popin_events_total", kind="api.event")
                                 == len(sockets)) else None

            for _ in range(6):
                found = wait_until(summed, 5)
                assert value(found, "popin_rules") == 2
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not folder.exists(), "the supervisor removes the metrics folder it made"
