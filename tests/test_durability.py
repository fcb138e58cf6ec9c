"""Acknowledged means durable: what the API answered 2xx for survives `kill -9` of the
server the moment after the answer (the write-behind buffer would have lost it)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import orjson
import pytest
from websockets.sync.client import connect

from conftest import free_port
from popin.cli import main

RULES = """
rules:
  - id: welcome
    category: transactional
    trigger: {event: signup}
    popin: {title: "Welcome!", body: "<p>Glad you joined</p>"}
"""


def serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, "-m", "popin", "--config", str(config), "serve",
                               "--port", str(port)], cwd=config.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/healthz")
            return server
        except httpx2.TransportError:
            assert server.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.05)


def api_key(config: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert main(["--config", str(config), "keys", "create", "--scope", "events"]) == 0
    return next(word for word in sys.stdout.getvalue().split() if word.startswith("pk_"))


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
