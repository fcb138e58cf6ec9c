"""What one stranger may take: sockets that never say hello or go quiet are closed,
floods are dropped then closed, sockets per address and in all are capped, slow HTTP
clients are cut off, and a bad `[limits]` table is refused at start."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import LOOPBACK, LiveServer, settings_with_rules
from popin.config import ConfigError, Limits, Settings, load_settings
from popin.web.app import create_app
from popin.web.limits import (
    PRUNE_AT,
    RESERVED_DESCRIPTORS,
    Admission,
    raise_open_files,
    socket_ceiling,
)

ORIGIN = {"origin": "http://testserver"}
HELLO = orjson.dumps({"type": "hello", "visitor": "visitor-0001", "session": "session-0001",
                      "url": "http://testserver/"}).decode()
RULES = "rules: []\n"


def client_with(tmp_path: Path, **limits: float) -> TestClient:
    settings = settings_with_rules(tmp_path, RULES, limits=Limits(**limits))  # type: ignore[arg-type]
    return TestClient(create_app(settings), client=LOOPBACK)


def metrics(client: TestClient) -> str:
    return client.get("/metrics").text


def test_a_socket_that_never_says_hello_is_closed(tmp_path: Path) -> None:
    with client_with(tmp_path, hello_seconds=1) as client:
        started = time.monotonic()
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws, \
                pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4008
        assert time.monotonic() - started < 5
        assert 'kind="closed.hello_timeout"} 1' in metrics(client)


def test_a_quiet_socket_is_closed_and_its_session_kept(tmp_path: Path) -> None:
    with client_with(tmp_path, idle_seconds=1) as client:
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
            ws.send_text(HELLO)
            assert ws.receive_json()["type"] == "config"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 4001
        assert 'kind="closed.idle"} 1' in metrics(client)
        # The widget comes back on the next action: the same session resumes.
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
            ws.send_text(HELLO)
            assert ws.receive_json()["type"] == "config"
        assert 'kind="session.resumed"} 1' in metrics(client)


def test_a_flood_is_dropped_then_closed(tmp_path: Path) -> None:
    with client_with(tmp_path, messages_per_second=1, message_burst=5,
                     dropped_before_close=10) as client:
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
            ws.send_text(HELLO)
            assert ws.receive_json()["type"] == "config"
            for _ in range(30):
                ws.send_text("x")
            answered = 0
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    assert ws.receive_json()["code"] == "bad_json"
                    answered += 1
            assert closed.value.code == 4029
        # The burst minus the hello was read; the rest was dropped unread.
        assert answered == 4
        text = metrics(client)
        assert 'kind="dropped.rate"} 10' in text and 'kind="closed.rate"} 1' in text


def test_sockets_per_address_and_in_all_are_capped(tmp_path: Path) -> None:
    with client_with(tmp_path, connections_per_address=2) as client:
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN), \
                client.websocket_connect("/ws?site=demo", headers=ORIGIN):
            with pytest.raises(WebSocketDisconnect) as refused, \
                    client.websocket_connect("/ws?site=demo", headers=ORIGIN):
                pass
            assert refused.value.code == 1013
        # Closed sockets give their place back.
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
            ws.send_text(HELLO)
            assert ws.receive_json()["type"] == "config"
        assert 'kind="refused.per_address"} 1' in metrics(client)
    with client_with(tmp_path, connections=1) as client:
        with client.websocket_connect("/ws?site=demo", headers=ORIGIN):
            with pytest.raises(WebSocketDisconnect) as refused, \
                    client.websocket_connect("/ws?site=demo", headers=ORIGIN):
                pass
            assert refused.value.code == 1013
        assert 'kind="refused.connections"} 1' in metrics(client)


def test_new_sockets_per_address_are_braked(tmp_path: Path) -> None:
    """Each handshake may bring a fresh visitor id: a script opening and closing sockets
    in a loop is refused like one holding too many, and counted."""
    with client_with(tmp_path, handshakes_per_minute=1, handshake_burst=3) as client:
        for _ in range(3):
            with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
                ws.send_text(HELLO)
                assert ws.receive_json()["type"] == "config"
        with pytest.raises(WebSocketDisconnect) as refused, \
                client.websocket_connect("/ws?site=demo", headers=ORIGIN):
            pass
        assert refused.value.code == 1013
        assert 'kind="refused.handshakes"} 1' in metrics(client)


def test_the_handshake_brake_refills_and_forgets_quiet_addresses() -> None:
    gate = Admission(Limits(handshakes_per_minute=60, handshake_burst=2))
    assert [gate.admit("203.0.113.9", now=0.0) for _ in range(3)] == [None, None, "handshakes"]
    assert gate.admit("203.0.113.10", now=0.0) is None, "another address has its own"
    assert gate.admit("203.0.113.9", now=1.0) is None, "a token a second comes back"
    # One IPv6 host holds a whole /64: its addresses share one bucket.
    assert gate.admit("2001:db8::1", now=0.0) is None
    assert gate.admit("2001:db8::2", now=0.0) is None
    assert gate.admit("2001:db8::3", now=0.0) == "handshakes"
    # A scan of addresses leaves no more buckets than were busy lately.
    for number in range(3 * PRUNE_AT):
        gate.admit(f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}", now=100.0 + number)
    assert len(gate._handshakes) <= PRUNE_AT + 1


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = settings_with_rules(tmp_path, RULES,
                                   limits=Limits(header_seconds=1, body_seconds=1))
    live = LiveServer(settings).start()
    yield live
    live.stop()


def raw(server: LiveServer) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return connection


def test_headers_sent_a_byte_at_a_time_are_cut_off(slow_server: LiveServer) -> None:
    with raw(slow_server) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert connection.recv(1024) == b"", "the server hung up"
        assert time.monotonic() - started < 5
    with raw(slow_server) as connection:  # nothing at all: the same
        assert connection.recv(1024) == b""
    with raw(slow_server) as connection:  # a normal request is served
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert connection.recv(1024).startswith(b"HTTP/1.1 200")


def test_a_body_sent_too_slowly_gets_408(slow_server: LiveServer) -> None:
    with raw(slow_server) as connection:
        connection.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"code":"timeout"' in answer


def test_the_server_raises_its_own_file_limit() -> None:
    open_files = raise_open_files()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == open_files and (soft == hard or hard == resource.RLIM_INFINITY)
    assert socket_ceiling(Limits(connections=10_000), 1024) == 1024 - RESERVED_DESCRIPTORS
    assert socket_ceiling(Limits(connections=500), 1 << 20) == 500


def test_serve_reports_its_socket_ceiling(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "popin", "serve", "--port", str(port),
         "--store", f"sqlite:///{tmp_path / 'popin.db'}"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert "sockets," in line and "open files" in line, line


@pytest.mark.parametrize(("table", "complaint"), [
    ("conections = 5", "unknown setting 'conections' (did you mean 'connections'?)"),
    ("connections = 0", "connections must be a whole number from 1 to 1000000, not 0"),
    ("connections = 2.5", "connections must be a whole number"),
    ("hello_seconds = true", "hello_seconds must be a number from 1 to 60, not True"),
    ("idle_seconds = 5", "idle_seconds must be a number from 30 to 86400, not 5"),
    ("handshakes_per_minute = 0", "handshakes_per_minute must be a number from 1 to 100000, not 0"),
    ("handshake_burst = 'many'", "handshake_burst must be a whole number from 1 to 100000"),
])
def test_a_bad_limit_is_refused_with_its_name(tmp_path: Path, table: str,
                                              complaint: str) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(f"[limits]\n{table}\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert complaint in str(refused.value)


def test_limits_load_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text("[limits]\nconnections = 5000\nmessages_per_second = 10\n")
    settings: Settings = load_settings(path)
    assert settings.limits == replace(Limits(), connections=5000, messages_per_second=10)


def test_an_oversized_api_body_is_refused_without_reading_it(slow_server: LiveServer) -> None:
    from conftest import make_key

    token = make_key(slow_server.settings, "events")
    head = (f"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n")
    with raw(slow_server) as connection:  # a declared length over the limit: at once
        connection.sendall(f"{head}Content-Length: 300000000\r\n\r\n".encode())
        assert connection.recv(4096).startswith(b"HTTP/1.1 413")
    with raw(slow_server) as connection:  # chunked, no length: refused mid-stream
        connection.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        sent = 0
        try:
            while sent < 50 * 1024 * 1024:
                connection.sendall(chunk)
                sent += 65536
        except OSError:
            pass  # the server answered and closed
        assert sent < 50 * 1024 * 1024, "the server kept reading"
        assert connection.recv(4096).startswith(b"HTTP/1.1 413")


def test_new_visitor_ids_cannot_grow_memory_without_end(tmp_path: Path) -> None:
    with client_with(tmp_path, sessions=3) as client:
        for number in range(6):
            with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
                ws.send_text(HELLO.replace("visitor-0001", f"visitor-000{number}"))
                assert ws.receive_json()["type"] == "config"
        hub = client.app.state.hub  # type: ignore[attr-defined]
        assert hub.live_sessions <= 3
        assert 'kind="session.evicted"} 3' in metrics(client)


@pytest.mark.redis
def test_socket_limits_are_the_machines_under_workers(tmp_path: Path, redis_url: str) -> None:
    """`--workers 2` and 4 sockets per address: each worker holds at most 2, so the
    machine at most 4, whichever worker the kernel gives each connection to (of 10
    attempts, one worker gets at least 5: without its share it would hold 4)."""
    import uuid
    from contextlib import ExitStack

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from conftest import free_port, serve, socket_holder, workers_of

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    config = tmp_path / "popin.toml"
    config.write_text(f'store = "{redis_url}?prefix=limits-{uuid.uuid4().hex}"\n'
                      'rules = "rules"\n[limits]\nconnections_per_address = 4\n'
                      '[[sites]]\nkey = "demo"\nholdout = 0\n')
    port = free_port()
    server = serve(config, port, "--workers", "2")
    held = ExitStack()
    try:
        pids = workers_of(server, 2)
        holders: list[int | None] = []
        refused = 0
        for number in range(10):
            try:
                ws = held.enter_context(connect(
                    f"ws://127.0.0.1:{port}/ws?site=demo", open_timeout=10,
                    origin=f"http://127.0.0.1:{port}"))  # type: ignore[arg-type]
            except InvalidStatus as refusal:
                assert refusal.response.status_code == 403
                refused += 1
                continue
            ws.send(orjson.dumps({"type": "hello", "visitor": f"visitor-{number:04}",
                                  "session": f"session-{number:04}",
                                  "url": f"http://127.0.0.1:{port}/demo/"}).decode())
            assert orjson.loads(ws.recv(timeout=10))["type"] == "config"
            holders.append(socket_holder(ws.socket, port, pids))
        assert None not in holders
        assert max(holders.count(pid) for pid in pids) <= 2, holders
        assert 2 <= len(holders) <= 4 and refused == 10 - len(holders)
    finally:
        held.close()
        server.terminate()
        server.wait(timeout=30)


def test_a_workers_share_of_the_limits_is_rounded_up() -> None:
    from popin.web.limits import worker_share

    shared = worker_share(Limits(connections=10_001, connections_per_address=200), 2)
    assert (shared.connections, shared.connections_per_address) == (5001, 100)
    assert worker_share(Limits(connections_per_address=1), 4).connections_per_address == 1


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame, masked with a zero key (which leaves the payload as it is)."""
    size = len(payload)
    header = (bytes([0x80 | opcode, 0x80 | size]) if size < 126
              else bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big"))
    return header + b"\0\0\0\0" + payload


def open_widget(port: int) -> socket.socket:
    """A raw widget socket past its hello, as a hostile client would hold one."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.sendall((f"GET /ws?site=demo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 f"Origin: http://127.0.0.1:{port}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    raw.sendall(masked(orjson.dumps({"type": "hello", "visitor": "visitor-flood-1",
                                     "session": "session-flood-1",
                                     "url": f"http://127.0.0.1:{port}/"})))
    return raw


def closed_within(raw: socket.socket, seconds: float) -> bool:
    """The server closed the connection, without waiting for our close frame."""
    raw.settimeout(seconds)
    try:
        while raw.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[int]:
    from conftest import free_port, serve

    (tmp_path / "rules").mkdir()
    config = tmp_path / "popin.toml"
    config.write_text('store = "sqlite:///popin.db"\nrules = "rules"\n'
                      '[[sites]]\nkey = "demo"\norigins = ["self"]\n')
    port = free_port()
    process = serve(config, port)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("frames", [10_000, 4_500], ids=["over 128 KB", "under 128 KB"])
def test_a_burst_of_tiny_frames_drops_its_socket_and_nobody_else_waits(
        open_server: int, frames: int) -> None:
    """Thousands of 27-byte frames in one write: the socket is dropped unread, counted,
    and /healthz answers meanwhile as fast as ever (it waited seconds before)."""
    import httpx2

    port = open_server
    flood = masked(b'{"type":"idle","s":1}') * frames
    floods = [open_widget(port) for _ in range(10)]
    try:
        for raw in floods:
            raw.sendall(flood)
        started = time.monotonic()
        assert httpx2.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert time.monotonic() - started < 1.0
        assert all(closed_within(raw, 2.0) for raw in floods)
    finally:
        for raw in floods:
            raw.close()
    time.sleep(1.2)  # counters reach /metrics once a second
    assert 'kind="closed.flood"} 10' in httpx2.get(f"http://127.0.0.1:{port}/metrics").text


def test_a_socket_closed_for_flooding_is_not_waited_for(open_server: int) -> None:
    """Past the rate limit the server closes with 4029 and stops reading at once, instead
    of reading and discarding what the flooder sends for the 10 s a close may take."""
    with open_widget(open_server) as raw:
        try:
            for _ in range(400):
                raw.sendall(masked(b"x"))
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            return  # closed as it flooded: not waited for
        assert closed_within(raw, 2.0)


def test_a_socket_that_pings_and_never_reads_is_dropped(open_server: int) -> None:
    """Pongs are written without asking the endpoint: a client that sends pings and reads
    nothing would make the server hold them all (17 MB a second in review)."""
    import httpx2

    pings = masked(b"p" * 125, opcode=0x9) * 250
    with open_widget(open_server) as widget:
        # A small window: what the server sends piles up on its side, as over a slow link.
        widget.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                widget.sendall(pings)
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() < deadline, "still held after 10 s of unread pongs"
    time.sleep(1.2)
    assert 'kind="closed.flood"} 1' in httpx2.get(
        f"http://127.0.0.1:{open_server}/metrics").text
