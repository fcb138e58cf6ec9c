"""Acknowledged means durable: what the API answered 2xx for survives `kill -9` of the
server the moment after the answer (the write-behind buffer would have lost it)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx2
import orjson
import pytest
from websockets.sync.client import connect

from conftest import api_key, free_port, serve

RULES = """
rules:
  - id: welcome
    category: transactional
    trigger: {event: signup}
    popin: {title: "Welcome!", body: "<p>Glad you joined</p>"}
"""


def test_a_queued_pop_in_survives_kill_9_right_after_the_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "welcome.yaml").write_text(RULES)
    config = tmp_path / "popin.toml"
    config.write_text(f'store = "sqlite:///{tmp_path / "popin.db"}"\nrules = "rules"\n'
                      '[[sites]]\nkey = "demo"\nholdout = 0\n')
    token = api_key(config, monkeypatch)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    batch = {"events": [{"name": "signup", "visitor": "visitor-kill-9",
                         "idempotency_key": "signup-kill-9"}]}
    headers = {"Authorization": f"Bearer {token}"}
    server = serve(config, port)
    try:
        answer = httpx2.post(f"{url}/api/v1/events", headers=headers, json=batch)
        # At once, before the write-behind's next flush (every second) could run.
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        assert answer.status_code == 200
        assert answer.json()["results"][0]["queued"] == 1
        server = serve(config, port)
        retried = httpx2.post(f"{url}/api/v1/events", headers=headers, json=batch)
        assert retried.json()["results"][0]["status"] == "duplicate"
        with connect(f"ws://127.0.0.1:{port}/ws?site=demo", origin=url,  # type: ignore[arg-type]
                     open_timeout=10) as ws:
            ws.send(orjson.dumps({"type": "hello", "visitor": "visitor-kill-9",
                                  "session": "session-after-kill", "url": f"{url}/demo/"}
                                 ).decode())
            frames = [orjson.loads(ws.recv(timeout=5)) for _ in range(2)]
        assert frames[0]["type"] == "config"
        assert frames[1]["type"] == "show" and frames[1]["rule"] == "welcome", \
            "the acknowledged pop-in was lost with the process"
    finally:
        server.kill()
        server.wait(timeout=10)
