"""A worker of `popin serve --workers 2` killed (-9) under load: the supervisor starts
another, the visitors it held reconnect to a live worker and continue their sessions
(caps kept, pushes awaiting acknowledgement sent again, acknowledged ones not), and
nothing the API acknowledged is lost."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx2
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import api_key, free_port, serve, socket_holder, wait_until, workers_of

RULES = """
events: [asked-help]
rules:
  - id: help
    category: transactional
    trigger: {event: asked-help}
    popin: {title: "Help", body: "<p>once a session</p>"}
  - id: shipped
    category: transactional
    trigger: {event: shipped}
    cap: {per_session: 100}
    popin: {title: "On its way", body: "<p>{{ trigger.props.parcel }}</p>"}
"""


class Load:
    """The site's backend posting events for visitors who are away, each with its own
    idempotency key, retried as a backend does when the connection breaks."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.queued: list[str] = []
        self.answered: dict[str, str] = {}
        self.posted: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        number = 0
        while not self.stop.is_set():
            visitor = f"visitor-away-{number:04d}"
            batch = {"events": [{"name": "shipped", "visitor": visitor, "idempotency_key":
                                 f"load-{number}", "props": {"parcel": f"away-{number}"}}]}
            self.posted.append(visitor)
            for _attempt in range(20):
                try:
                    answer = httpx2.post(f"{self.url}/api/v1/events", json=batch, timeout=10,
                                         headers={"Authorization": f"Bearer {self.token}"})
                except httpx2.TransportError:
                    time.sleep(0.05)  # the worker died under this request: retried
                    continue
                if answer.status_code == 503:
                    # The retry met the claim of the request the worker died under: it
                    # lapses (Retry-After), and then this retry applies the event.
                    time.sleep(float(answer.headers.get("Retry-After", "0.2")))
                    continue
                result = answer.json()["results"][0]
                # Every answer counts, "duplicate" too: a duplicate stands for a push
                # written, never for a claim whose worker died before writing it.
                self.answered[visitor] = result["status"]
                if result["status"] in ("applied", "duplicate"):
                    self.queued.append(visitor)
                break
            number += 1
            time.sleep(0.02)


def hello(ws: ClientConnection, url: str, visitor: str) -> None:
    ws.send(orjson.dumps({"type": "hello", "visitor": visitor, "session": f"s-{visitor}",
                          "url": f"{url}/demo/"}).decode())
    assert orjson.loads(ws.recv(timeout=5))["type"] == "config"


def frames_until_barrier(ws: ClientConnection) -> list[dict[str, object]]:
    """What the server sent before it answered a bad frame: everything it meant to."""
    ws.send("barrier")
    frames = []
    while (frame := orjson.loads(ws.recv(timeout=5))).get("code") != "bad_json":
        frames.append(frame)
    return frames


def post(url: str, token: str, visitor: str, name: str, parcel: str = "") -> dict[str, object]:
    answer = httpx2.post(f"{url}/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                         json={"events": [{"name": name, "visitor": visitor,
                                           "props": {"parcel": parcel}}]})
    assert answer.status_code == 200, answer.text
    result: dict[str, object] = answer.json()["results"][0]
    return result


def test_a_worker_killed_under_load_loses_no_visitor_and_nothing_acknowledged(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    config = tmp_path / "popin.toml"
    config.write_text(f'store = "{redis_url}?prefix=killed-{uuid.uuid4().hex}"\n'
                      'rules = "rules"\n[[sites]]\nkey = "demo"\nholdout = 0\n')
    token = api_key(config, monkeypatch)
    # The operator's own metrics folder this time: a previous run's file is cleared away.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_99999.db").write_bytes(b"a previous run's totals")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(config, port, "--workers", "2")
    load = Load(url, token)
    try:
        pids = workers_of(server, 2)
        with ExitStack() as stack:
            sockets: dict[str, ClientConnection] = {}
            holders: dict[str, int | None] = {}
            # Until each worker holds at least two visitors (the kernel spreads them).
            while min(list(holders.values()).count(pid) for pid in pids) < 2:
                assert len(sockets) < 60, "the sockets all went to one worker"
                visitor = f"visitor-live-{len(sockets):04d}"
                ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws?site=demo",
                                                 origin=url))  # type: ignore[arg-type]
                hello(ws, url, visitor)
                sockets[visitor], holders[visitor] = ws, socket_holder(ws.socket, port, pids)
            time.sleep(0.3)
            # Sessions in progress: each offered help once (the session's cap); half of
            # them acknowledge it, the others leave it awaiting acknowledgement.
            offered: dict[str, str] = {}
            for index, (visitor, ws) in enumerate(sockets.items()):
                ws.send('{"type": "event", "name": "asked-help"}')
                shown = orjson.loads(ws.recv(timeout=2))
                assert shown["rule"] == "help"
                if index % 2 == 0:
                    ws.send(orjson.dumps({"type": "popin", "id": shown["id"],
                                          "status": "clicked"}).decode())
                else:
                    offered[visitor] = str(shown["id"])
            for ws in sockets.values():
                frames_until_barrier(ws)
            load.thread.start()
            time.sleep(1.5)  # the write-behind's flush (every second) has run
            victim = holders[next(iter(sockets))]
            assert victim is not None
            moved = [visitor for visitor, pid in holders.items() if pid == victim]
            os.kill(victim, signal.SIGKILL)
            for visitor in moved:
                with pytest.raises(ConnectionClosed):
                    sockets[visitor].recv(timeout=5)
            # Pushed while they are away: kept for them, whichever process they come back to.
            away_parcel = {visitor: f"during-{visitor}" for visitor in moved
                           if visitor not in offered}
            for visitor, parcel in away_parcel.items():
                assert post(url, token, visitor, "shipped", parcel)["queued"] == 1
            replaced = workers_of(server, 2, gone=victim)
            new_holders = set()
            for visitor in moved:
                ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws?site=demo",
                                                 origin=url))  # type: ignore[arg-type]
                hello(ws, url, visitor)
                new_holders.add(socket_holder(ws.socket, port, replaced))
                sockets[visitor] = ws
                frames = frames_until_barrier(ws)
                ids = [frame["id"] for frame in frames if frame["type"] == "show"]
                if visitor in offered:
                    assert ids == [offered[visitor]], \
                        f"{visitor}: the unacknowledged offer is sent again, alone: {frames}"
                else:
                    assert [away_parcel[visitor] in str(frame["html"]) for frame in frames
                            if frame["type"] == "show"] == [True], \
                        f"{visitor}: the push queued meanwhile, not the acknowledged one: " \
                        f"{frames}"
                ws.send(orjson.dumps({"type": "popin", "id": ids[0], "status": "clicked"}
                                     ).decode())
            assert new_holders <= set(replaced) and None not in new_holders
            time.sleep(0.3)
            # The sessions continued: their cap of one offer came along.
            for visitor in moved:
                sockets[visitor].send('{"type": "event", "name": "asked-help"}')
                assert not frames_until_barrier(sockets[visitor]), \
                    f"{visitor} was offered help twice in one session: its cap was reset"
            # ... and pushes still reach every visitor live, on either worker, once the
            # offers left open elsewhere are closed.
            for visitor, push_id in offered.items():
                if visitor not in moved:
                    sockets[visitor].send(orjson.dumps({"type": "popin", "id": push_id,
                                                        "status": "clicked"}).decode())
                    frames_until_barrier(sockets[visitor])
            for visitor, ws in sockets.items():
                result = post(url, token, visitor, "shipped", f"after-{visitor}")
                assert result["shown_live"] == 1, (visitor, result)
                assert f"after-{visitor}" in str(orjson.loads(ws.recv(timeout=2))["html"])
            load.stop.set()
            load.thread.join(timeout=30)
            # One scrape sums the live workers only: the dead one's sockets are not counted.
            assert wait_until(lambda: f"popin_live_sockets {float(len(sockets))}" in
                              httpx2.get(f"{url}/metrics").text, 5)
        # Every event posted under load was answered 2xx in the end, and waits for its
        # visitor, whichever answer it got.
        assert len(load.queued) >= 10, load.queued
        assert set(load.answered.values()) <= {"applied", "duplicate"}, load.answered
        assert sorted(load.answered) == sorted(load.queued) == sorted(load.posted)
        for visitor in load.queued:
            with connect(f"ws://127.0.0.1:{port}/ws?site=demo",
                         origin=url) as ws:  # type: ignore[arg-type]
                hello(ws, url, visitor)
                number = visitor.rsplit("-", 1)[1].lstrip("0") or "0"
                assert f"away-{number}<" in str(orjson.loads(ws.recv(timeout=5))["html"]), \
                    f"{visitor}: an acknowledged push was lost"
    finally:
        load.stop.set()
        if load.thread.is_alive():
            load.thread.join(timeout=30)
        server.terminate()
        server.wait(timeout=30)
    assert metrics.is_dir() and not (metrics / "counter_99999.db").exists()
