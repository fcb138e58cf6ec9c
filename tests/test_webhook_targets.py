"""Where webhooks may go: https, http only to hosts the owner lists, and never into
loopback, private or link-local ranges unless the owner lists them too. A refused URL is
dead-lettered at once with the reason and nothing is sent. Requests go to a transport
that records them, or to a real receiver on 127.0.0.1: never to the network."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_webhooks import SECRET, Receiver, deliveries, post_signups, settings_for

from conftest import LiveServer, free_port, wait_until
from popin.config import ConfigError, WebhookSettings, load_settings
from popin.core.site import Site
from popin.features.appointments.answers import notify_owner
from popin.features.webhooks import deliver
from popin.stores.backends import open_store
from popin.stores.deliveries import Delivery

SITES = {"demo": Site("demo", webhook_secret=SECRET,
                      notify_url="https://crm.example/hooks/popin")}
INTERNAL = ["http://127.0.0.1:8080/hook", "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/hook", "http://localhost:8080/hook", "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook"]


class Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def client(self) -> httpx.AsyncClient:
        def answer(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return httpx.Response(204)

        return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def send(tmp_path: Path, url: str, settings: WebhookSettings, recorder: Recorder,
         client: httpx.AsyncClient | None = None) -> Delivery:
    """One delivery to `url` through the real sender and a real store; as it ends up."""
    async def run() -> Delivery:
        store = open_store(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
        await store.open()
        try:
            delivery = Delivery.new("demo", "visitor-0001", url, {"type": "lead"}, 1.0)
            await store.save_delivery(delivery)
            async with client or recorder.client() as sender:
                await deliver(sender, store, SITES, Counter(), settings, delivery)
            [kept] = [d for status in ("pending", "delivered", "dead")
                      for d in await store.list_deliveries("demo", status)]
            return kept
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.mark.parametrize("url", INTERNAL)
def test_plain_http_is_refused_unless_the_host_is_listed(
        tmp_path: Path, recorder: Recorder, url: str) -> None:
    dead = send(tmp_path, url, WebhookSettings(), recorder)
    assert (dead.status, dead.attempts) == ("dead", 1), "no retry: it cannot change"
    assert "webhooks go over https" in dead.last_error
    assert recorder.requests == []


@pytest.mark.parametrize(("url", "kind"), [
    ("http://127.0.0.1:8080/hook", "127.0.0.1, a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local address"),
    ("http://10.0.0.1/hook", "10.0.0.1, a private address"),
    ("http://localhost:8080/hook", "a loopback address"),
    ("http://[::1]/hook", "::1, a loopback address"),
    ("http://[::ffff:127.0.0.1]/hook", "127.0.0.1, a loopback address"),
    ("http://0.0.0.0/hook", "0.0.0.0, a"),
])
def test_listed_http_hosts_still_never_reach_internal_addresses(
        tmp_path: Path, recorder: Recorder, url: str, kind: str) -> None:
    host = httpx.URL(url).host
    dead = send(tmp_path, url, WebhookSettings(allow_http_hosts=(host,)), recorder)
    assert dead.status == "dead" and kind in dead.last_error
    assert "allow_private" in dead.last_error
    assert recorder.requests == []


def test_https_to_a_private_address_is_refused_too(tmp_path: Path,
                                                   recorder: Recorder) -> None:
    dead = send(tmp_path, "https://10.0.0.1/hook", WebhookSettings(), recorder)
    assert dead.status == "dead" and "a private address" in dead.last_error
    assert recorder.requests == []


def test_a_name_with_one_internal_address_among_public_ones_is_refused(
        tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    monkeypatch.setattr("popin.features.webhooks.lookup", rebinding)
    dead = send(tmp_path, "https://crm.example/hooks/popin", WebhookSettings(), recorder)
    assert dead.status == "dead" and "crm.example resolves to 127.0.0.1" in dead.last_error
    assert recorder.requests == []


def test_a_public_name_is_called_at_the_address_that_was_checked(
        tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[str] = []

    async def public(host: str, port: int) -> list[str]:
        answers.append(f"{host}:{port}")
        return ["93.184.216.34"]

    monkeypatch.setattr("popin.features.webhooks.lookup", public)
    done = send(tmp_path, "https://crm.example/hooks/popin?x=1", WebhookSettings(), recorder)
    assert done.status == "delivered" and answers == ["crm.example:443"]
    [request] = recorder.requests
    assert str(request.url) == "https://93.184.216.34/hooks/popin?x=1"
    assert request.headers["host"] == "crm.example"
    assert request.extensions["sni_hostname"] == "crm.example"


def test_the_owner_may_allow_a_receiver_on_their_network(tmp_path: Path,
                                                         recorder: Recorder) -> None:
    settings = WebhookSettings(allow_http_hosts=("localhost",),
                               allow_private=("127.0.0.0/8", "::1"))
    done = send(tmp_path, "http://localhost:8080/hook", settings, recorder)
    assert done.status == "delivered"
    [request] = recorder.requests
    assert request.url.host == "127.0.0.1" and request.headers["host"] == "localhost:8080"


def test_a_live_server_dead_letters_a_rule_to_this_machine(tmp_path: Path) -> None:
    receiver = Receiver(lambda n: "ok").start()
    # The receiver is really there: only the policy stands between them. (Plain http to
    # a host not in allow_http_hosts never gets this far: the rule is refused at load.)
    cases = [(receiver.url.replace("127.0.0.1", "localhost"), ("localhost",), "loopback")]
    try:
        for number, (url, http_hosts, reason) in enumerate(cases):
            folder = tmp_path / str(number)
            folder.mkdir()
            settings, token = settings_for(folder, url, allow_http_hosts=http_hosts,
                                           allow_private=())
            server = LiveServer(settings).start()
            try:
                post_signups(server, token, range(1))
                dead = wait_until(lambda s=server, t=token: deliveries(s, t, "dead"))
                assert reason in dead[0]["last_error"] and dead[0]["attempts"] == 1
                metrics = httpx.get(f"{server.url}/metrics").text
                assert 'kind="webhook.refused"} 1' in metrics
            finally:
                server.stop()
    finally:
        receiver.stop()
    assert receiver.requests == []


def test_a_notify_url_to_this_machine_is_dead_lettered_unsent(tmp_path: Path) -> None:
    receiver = Receiver(lambda n: "ok").start()
    settings, token = settings_for(tmp_path, "https://crm.example/unused",
                                   allow_private=())
    site = Site("demo", webhook_secret=SECRET, notify_url=receiver.url)
    settings.sites = {"demo": site}

    async def announce() -> None:
        store = open_store(settings.store)
        await store.open()
        await notify_owner(store, site, "visitor-0001", {"type": "lead", "name": "Léa"}, 1.0)
        await store.close()

    asyncio.run(announce())
    server = LiveServer(settings).start()
    try:
        dead = wait_until(lambda: deliveries(server, token, "dead"))
        assert "127.0.0.1, a loopback address" in dead[0]["last_error"]
    finally:
        server.stop()
        receiver.stop()
    assert receiver.requests == []


def test_notify_url_needs_https_or_a_listed_host(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    site = '[[sites]]\nkey = "demo"\nnotify_url = "http://crm.example/hooks"\n'
    path.write_text(site)
    with pytest.raises(ConfigError, match=r"site 'demo': notify_url: .* over https"):
        load_settings(path)
    path.write_text('[webhooks]\nallow_http_hosts = ["CRM.example"]\n'
                    'allow_private = ["10.0.0.0/8"]\n' + site)
    webhooks = load_settings(path).webhooks
    assert webhooks.allow_http_hosts == ("crm.example",)
    assert webhooks.allow_private == ("10.0.0.0/8",)
    path.write_text('[webhooks]\nallow_private = ["crm.example"]\n')
    with pytest.raises(ConfigError, match="allow_private"):
        load_settings(path)


def test_tls_to_the_checked_address_still_verifies_the_host_name(
        tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real TLS receiver on 127.0.0.1 with a certificate for crm.example only: the
    request reaches it by its checked address, named crm.example in SNI and Host, and
    a URL naming another host is refused by certificate verification."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=crm.example", "-addext", "subjectAltName=DNS:crm.example",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"host": self.headers["Host"],
                         "sni": getattr(self.connection, "sni", None)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def remember_sni(connection: ssl.SSLSocket, name: str | None, _: Any) -> None:
        connection.sni = name  # type: ignore[attr-defined]

    context.sni_callback = remember_sni
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def to_this_machine(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    monkeypatch.setattr("popin.features.webhooks.lookup", to_this_machine)
    settings = WebhookSettings(allow_private=("127.0.0.1",))
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        done = send(tmp_path, f"https://crm.example:{port}/hook", settings, recorder,
                    httpx.AsyncClient(verify=trusting))
        assert done.status == "delivered", done.last_error
        assert seen == [{"host": f"crm.example:{port}", "sni": "crm.example"}]
        other = send(tmp_path, f"https://other.example:{port}/hook", settings, recorder,
                     httpx.AsyncClient(verify=trusting))
        assert other.status == "pending" and "certificate" in other.last_error
        assert len(seen) == 1
    finally:
        server.shutdown()
        server.server_close()
