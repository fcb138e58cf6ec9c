"""Webhooks against a real local receiver that fails, times out, hangs and recovers:
every delivery arrives exactly once (the receiver dedupes by delivery id), signed, and
none is lost across a server restart; the last failure is dead-lettered with its reason."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from conftest import LiveServer, free_port, make_key, wait_until
from popin.config import Settings, WebhookSettings
from popin.core.site import Site
from popin.features.webhooks import next_delay, signature, verify

SECRET = "s3cret-for-tests"


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    body = '{"id": "abc", "rule": "r"}'
    expected = hmac.new(SECRET.encode(), f"1700000000.{body}".encode(), hashlib.sha256)
    assert signature(SECRET, 1700000000, body) == f"v1={expected.hexdigest()}"
    header = signature(SECRET, 1700000000, body)
    assert verify(SECRET, header, "1700000000", body, now=1700000100)
    assert not verify(SECRET, header, "1700000000", body + " ", now=1700000100)
    assert not verify("other", header, "1700000000", body, now=1700000100)
    assert not verify(SECRET, header, "1700000000", body, now=1700000000 + 3600), "a replay"
    assert not verify(SECRET, header, "soon", body)


def test_backoff_grows_with_jitter_and_a_ceiling() -> None:
    settings = WebhookSettings(backoff=2.0)
    for attempts, full in [(1, 2.0), (2, 4.0), (5, 32.0), (30, 3600.0)]:
        delays = [next_delay(attempts, settings) for _ in range(50)]
        assert all(full / 2 <= delay <= full for delay in delays)
        assert len(set(delays)) > 1


@dataclass
class Receiver:
    """A CRM endpoint: `script` says what each request gets (by arrival order)."""

    script: Callable[[int], str]
    port: int = field(default_factory=free_port)
    requests: list[str] = field(default_factory=list)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_signatures: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/popin"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                delivery = self.headers["Popin-Delivery"]
                number = len(receiver.requests)
                receiver.requests.append(delivery)
                action = receiver.script(number)
                if action == "hang":
                    receiver.release.wait(10)
                if action == "fail":
                    self.send_response(500)
                    self.end_headers()
                    return
                if not verify(SECRET, self.headers["Popin-Signature"],
                              self.headers["Popin-Timestamp"], body):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                # Dedupe by delivery id: a retry of something already taken is acknowledged.
                receiver.accepted.setdefault(delivery, orjson.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def rules_for(folder: Path, url: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "hooks.yaml").write_text(
        "rules:\n  - id: crm-signup\n    trigger: {event: signup}\n    cap: {per_session: 99}\n"
        f"    webhook: {{url: \"{url}\"}}\n")
    return folder


def settings_for(tmp_path: Path, url: str, **webhooks: Any) -> tuple[Settings, str]:
    # The receiver is on this machine, over http: the owner lists it, as they would.
    options = {"timeout": 0.5, "max_attempts": 8, "backoff": 0.05, "poll_interval": 0.05,
               "allow_http_hosts": ("127.0.0.1",), "allow_private": ("127.0.0.1",),
               **webhooks}
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}",
                        rules=rules_for(tmp_path / "rules", url), reload=False,
                        sites={"demo": Site("demo", webhook_secret=SECRET)},
                        webhooks=WebhookSettings(**options))
    return settings, make_key(settings, "events")


def post_signups(server: LiveServer, token: str, visitors: range) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/events", timeout=10,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"events": [{"name": "signup", "visitor": f"visitor-{n:04d}"}
                                       for n in visitors]})


def deliveries(server: LiveServer, token: str, status: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(
        f"{server.url}/api/v1/webhooks", params={"status": status},
        headers={"Authorization": f"Bearer {token}"}).json()["deliveries"]
    return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # Three failures, one request that hangs past the timeout, then all is well.
    flaky = Receiver(lambda n: "fail" if n < 3 else "hang" if n == 3 else "ok").start()
    try:
        yield flaky
    finally:
        flaky.stop()


def test_every_webhook_arrives_once_through_failures_and_timeouts(
        tmp_path: Path, receiver: Receiver) -> None:
    settings, token = settings_for(tmp_path, receiver.url)
    server = LiveServer(settings).start()
    try:
        started = time.monotonic()
        response = post_signups(server, token, range(10))
        # The hung receiver holds a request; event handling does not wait for it.
        assert response.status_code == 200
        assert not receiver.release.is_set() and time.monotonic() - started < 5
        wait_until(lambda: len(receiver.requests) >= 4)
        receiver.release.set()
        wait_until(lambda: len(deliveries(server, token, "delivered")) == 10)
    finally:
        server.stop()
    assert len(receiver.accepted) == 10
    assert {body["visitor"] for body in receiver.accepted.values()} == {
        f"visitor-{n:04d}" for n in range(10)}
    assert all(body["id"] == delivery for delivery, body in receiver.accepted.items())
    assert len(receiver.requests) > 10, "the failures were retried"
    assert receiver.bad_signatures == 0


def test_none_is_lost_across_a_server_restart(tmp_path: Path) -> None:
    receiver = Receiver(lambda n: "ok")  # not started yet: connection refused
    settings, token = settings_for(tmp_path, receiver.url, backoff=0.2, max_attempts=30)
    server = LiveServer(settings).start()
    try:
        assert post_signups(server, token, range(5)).status_code == 200
        wait_until(lambda: all(d["attempts"] >= 1 for d in deliveries(server, token, "pending"))
                 and len(deliveries(server, token, "pending")) == 5)
    finally:
        server.stop()
    receiver.start()
    restarted = LiveServer(settings).start()
    try:
        wait_until(lambda: len(deliveries(restarted, token, "delivered")) == 5)
        assert deliveries(restarted, token, "pending") == []
    finally:
        restarted.stop()
        receiver.stop()
    assert len(receiver.accepted) == 5


def test_the_last_failure_is_dead_lettered_with_its_reason(tmp_path: Path) -> None:
    receiver = Receiver(lambda n: "fail").start()
    settings, token = settings_for(tmp_path, receiver.url, max_attempts=3)
    server = LiveServer(settings).start()
    try:
        post_signups(server, token, range(1))
        dead = wait_until(lambda: deliveries(server, token, "dead"))
        assert dead[0]["attempts"] == 3 and dead[0]["last_error"] == "HTTP 500"
        assert 'kind="webhook.dead"} 1' in httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
        receiver.stop()
    assert len(receiver.requests) == 3


def test_a_site_without_a_secret_sends_nothing_unsigned(tmp_path: Path) -> None:
    receiver = Receiver(lambda n: "ok").start()
    settings, token = settings_for(tmp_path, receiver.url, max_attempts=1)
    settings.sites = {"demo": Site("demo")}
    server = LiveServer(settings).start()
    try:
        post_signups(server, token, range(1))
        dead = wait_until(lambda: deliveries(server, token, "dead"))
        assert "no webhook_secret" in dead[0]["last_error"]
    finally:
        server.stop()
        receiver.stop()
    assert receiver.requests == []
