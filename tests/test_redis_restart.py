"""Redis restarted under a running server (AOF on, a clean shutdown): the pooled
connections it had all died with it. Once Redis is back every API call and every new
socket works at once; none is answered 503 or dropped for meeting a dead connection."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import orjson
import pytest
from websockets.sync.client import connect

from conftest import api_key, free_port, serve, start_redis, stop, wait_until

RULES = """
rules:
  - id: shipped
    category: transactional
    trigger: {event: shipped}
    popin: {title: "On its way", body: "<p>soon</p>"}
"""
BURST = 24


def test_after_a_redis_restart_every_call_and_socket_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    redis_port = free_port()
    data = tmp_path / "redis"
    redis = start_redis(data, redis_port, "--appendonly", "yes")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shipped.yaml").write_text(RULES)
    config = tmp_path / "popin.toml"
    config.write_text(f'store = "redis://127.0.0.1:{redis_port}/0"\nrules = "rules"\n'
                      '[[sites]]\nkey = "demo"\nholdout = 0\n')
    token = api_key(config, monkeypatch)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(config, port)

    def post(number: int) -> int:
        batch = {"events": [{"name": "shipped", "visitor": f"visitor-{number}"}]}
        return httpx2.post(f"{url}/api/v1/events", json=batch, timeout=30,
                           headers={"Authorization": f"Bearer {token}"}).status_code

    def hello(number: int) -> str:
        with connect(f"ws://127.0.0.1:{port}/ws?site=demo", origin=url,  # type: ignore[arg-type]
                     open_timeout=10) as ws:
            ws.send(orjson.dumps({"type": "hello", "visitor": f"visitor-{number}",
                                  "session": f"session-{number}", "url": f"{url}/demo/"}
                                 ).decode())
            frames = [orjson.loads(ws.recv(timeout=10)) for _ in range(2)]
        return f"{frames[0]['type']} {frames[1]['type']}"

    try:
        with ThreadPoolExecutor(BURST) as pool:
            # Many requests at once: the pool keeps that many connections open.
            assert sorted(set(pool.map(post, range(BURST)))) == [200]
            stop([redis])
            redis = start_redis(data, redis_port, "--appendonly", "yes")
            wait_until(lambda: subprocess.run(
                ["redis-cli", "-p", str(redis_port), "ping"], capture_output=True,
                text=True).stdout.strip() == "PONG")
            answers = list(pool.map(post, range(BURST, 2 * BURST)))
            assert answers == [200] * BURST, "calls failed on connections Redis closed"
            # Each visitor has the pop-in posted above waiting: hello reads the outbox.
            opened = list(pool.map(hello, range(BURST, 2 * BURST)))
            assert opened == ["config show"] * BURST
    finally:
        server.terminate()
        server.wait(timeout=30)
        stop([redis])
