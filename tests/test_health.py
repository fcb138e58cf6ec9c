"""/healthz and /metrics: liveness for anyone, details and counters for the operator only
(loopback by default, the addresses of metrics_allow, or the metrics_token), and a store
that cannot answer makes the server unhealthy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx2
import orjson
import pytest
from starlette.testclient import TestClient

from conftest import (
    LOOPBACK,
    LiveServer,
    free_port,
    run,
    settings_with_rules,
    wait_for_port,
    wait_until,
)
from popin.config import ConfigError, Settings, load_settings
from popin.web.app import create_app

RULES = "rules: []\n"
TOKEN = "a-long-metrics-token-for-tests"
STRANGER = ("203.0.113.5", 40000)


@pytest.fixture
def settings_(tmp_path: Path) -> Settings:
    return settings_with_rules(tmp_path, RULES)


def client_from(settings: Settings, address: tuple[str, int]) -> TestClient:
    return TestClient(create_app(settings), client=address)


@pytest.mark.parametrize("address", [STRANGER, ("testclient", 50000), ("10.0.0.7", 1)])
def test_strangers_learn_only_that_the_server_lives(settings_: Settings,
                                                    address: tuple[str, int]) -> None:
    with client_from(settings_, address) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"ok": True}
        metrics = client.get("/metrics")
        assert metrics.status_code == 403 and "popin_events_total" not in metrics.text


@pytest.mark.parametrize("address", [LOOPBACK, ("::1", 50000), ("::ffff:127.0.0.1", 1)])
def test_loopback_sees_everything_by_default(settings_: Settings,
                                             address: tuple[str, int]) -> None:
    with client_from(settings_, address) as client:
        health = client.get("/healthz").json()
        assert health["ok"] is True and (health["status"], health["reasons"]) == ("ok", [])
        assert {"rules", "rule_errors", "sessions", "connections"} <= set(health)
        assert "popin_live_sessions 0" in client.get("/metrics").text


def test_the_token_opens_the_details_from_anywhere(settings_: Settings) -> None:
    settings_.metrics_token = TOKEN
    with client_from(settings_, STRANGER) as client:
        refused = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/healthz").json() == {"ok": True}
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert "popin_events_total" in client.get("/metrics", headers=bearer).text
        assert "rule_errors" in client.get("/healthz", headers=bearer).json()


def test_allowed_addresses_are_the_owners_to_choose(settings_: Settings) -> None:
    settings_.metrics_allow = ("10.0.0.0/8",)
    with client_from(settings_, ("10.0.0.7", 1)) as inside:
        assert inside.get("/metrics").status_code == 200
    with client_from(settings_, LOOPBACK) as local:
        assert local.get("/metrics").status_code == 403, "loopback is no longer listed"


def test_a_local_proxy_does_not_make_every_client_local(settings_: Settings) -> None:
    with client_from(settings_, LOOPBACK) as client:
        forwarded = {"X-Forwarded-For": "203.0.113.5"}
        assert client.get("/metrics", headers=forwarded).status_code == 403
        assert client.get("/healthz", headers=forwarded).json() == {"ok": True}


def test_a_store_that_cannot_answer_makes_the_server_unhealthy(settings_: Settings) -> None:
    async def broken(key: str) -> str | None:
        raise OSError("disk I/O error")

    for address in (STRANGER, LOOPBACK):
        with client_from(settings_, address) as client:
            client.app.state.hub.store.setting_get = broken  # type: ignore[attr-defined]
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["ok"] is False
            if address == LOOPBACK:
                assert health.json()["status"] == "degraded"
                assert health.json()["reasons"] == ["store read failing: OSError: disk I/O error"]
            else:
                assert health.json() == {"ok": False}


def test_a_read_only_store_is_degraded_and_recovers(settings_: Settings) -> None:
    """SQLite still answers reads, but refuses every write (a read-only file, a full
    disk): the write probe and the failing write-behind say so, and why."""
    with client_from(settings_, LOOPBACK) as client:
        hub = client.app.state.hub  # type: ignore[attr-defined]
        assert client.get("/healthz").json()["status"] == "ok"
        with client.websocket_connect("/ws?site=demo", headers={"origin": "http://testserver"}
                                      ) as ws:
            ws.send_text(orjson.dumps({"type": "hello", "visitor": "visitor-read-only",
                                       "session": "session-0001",
                                       "url": "http://testserver/demo/"}).decode())
            ws.receive_json()
            run(hub.store._run(lambda db: db.execute("PRAGMA query_only = ON")))
            run(hub.flush())
            health = client.get("/healthz")
            assert health.status_code == 503
            body = health.json()
            assert (body["ok"], body["status"]) == (False, "degraded")
            assert body["reasons"][0] == ("store write failing: OperationalError: attempt "
                                          "to write a readonly database")
            assert body["reasons"][1].startswith("write-behind failing for ")
            assert "writes waiting: OperationalError: attempt to write a readonly" in \
                body["reasons"][1]
            run(hub.store._run(lambda db: db.execute("PRAGMA query_only = OFF")))
            run(hub.flush())
            assert client.get("/healthz").json() | {"status": "ok", "reasons": []} == \
                client.get("/healthz").json(), "healthy again once the writes go through"
        assert run(hub.store.load_profile("demo", "visitor-read-only")) is not None, \
            "the writes held back meanwhile were kept"


def test_a_redis_that_stops_degrades_the_server_until_it_is_back(
        tmp_path: Path) -> None:
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()

    def redis_server() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port)
        return process

    redis = redis_server()
    try:
        settings = settings_with_rules(tmp_path, RULES)
        settings.store = f"redis://127.0.0.1:{port}/0?prefix=health"
        with client_from(settings, LOOPBACK) as client:
            assert client.get("/healthz").json()["status"] == "ok"
            redis.terminate()
            redis.wait(timeout=10)
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            assert health.json()["reasons"][0].startswith("store read failing: ")
            assert "Connect" in health.json()["reasons"][0], health.json()
            redis = redis_server()
            assert wait_until(lambda: client.get("/healthz").json()["status"] == "ok", 10)
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def test_a_live_server_answers_loopback_with_the_details(settings_: Settings) -> None:
    server = LiveServer(settings_).start()
    try:
        health = httpx2.get(f"{server.url}/healthz").json()
        assert health["ok"] is True and health["rules"] == 0
        assert httpx2.get(f"{server.url}/metrics").status_code == 200
    finally:
        server.stop()


def test_the_settings_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(f'metrics_token = "{TOKEN}"\nmetrics_allow = ["10.0.0.0/8", "::1"]\n')
    settings = load_settings(path)
    assert (settings.metrics_token, settings.metrics_allow) == (TOKEN, ("10.0.0.0/8", "::1"))
    assert load_settings(None).metrics_allow == ("127.0.0.1", "::1")
    path.write_text('metrics_allow = ["monitoring.example"]\n')
    with pytest.raises(ConfigError, match="metrics_allow"):
        load_settings(path)

