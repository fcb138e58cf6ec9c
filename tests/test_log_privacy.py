"""A full run of `popin serve`, at debug level, and its logs: no visitor's address, e-mail,
phone or name, and no API key, whatever the visitors and the backend did; in text and in
JSON lines (each line one object), tracebacks included."""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import orjson
import pytest
from websockets.sync.client import connect

from conftest import ROOT, free_port
from popin.cli import main
from popin.web.logs import JsonLines

# Visitors come from 127.0.0.2: the server listens on 127.0.0.1, which its own start-up
# line names, so any 127.0.0.2 in the logs is a visitor's address.
VISITOR_ADDRESS = "127.0.0.2"
EMAIL, PHONE, NAME = "lea.secret@example.com", "+33 6 12 34 56 78", "Léa Secretname"
IDENTITY_SECRET = "log-privacy-identity-secret"


def from_visitor(port: int) -> socket.socket:
    connection = socket.socket()
    connection.bind((VISITOR_ADDRESS, 0))
    connection.connect(("127.0.0.1", port))
    return connection


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_logs_hold_no_address_contact_or_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 log_format: str) -> None:
    config = tmp_path / "popin.toml"
    config.write_text(f'store = "sqlite:///{tmp_path / "popin.db"}"\n'
                      f'rules = "{ROOT / "rules"}"\n'
                      f'[[sites]]\nkey = "demo"\nidentity_secret = "{IDENTITY_SECRET}"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("a long owner password\n"))
    assert main(["--config", str(config), "admin", "set-password", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert main(["--config", str(config), "keys", "create", "--scope", "events",
                 "--scope", "profiles"]) == 0
    token = next(word for word in sys.stdout.getvalue().split() if word.startswith("pk_"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "popin", "--config", str(config), "serve", "--port", str(port),
         "--log-level", "debug", "--log-format", log_format], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx2.get(f"{url}/healthz")
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        signed = hmac.new(IDENTITY_SECRET.encode(), b"user-secret-42", hashlib.sha256)
        with connect(f"ws://127.0.0.1:{port}/ws?site=demo", origin=url,  # type: ignore[arg-type]
                     sock=from_visitor(port)) as ws:
            ws.send(orjson.dumps({"type": "hello", "visitor": "visitor-secret-1",
                                  "session": "session-0001", "url": f"{url}/demo/"}).decode())
            ws.recv()
            ws.send(orjson.dumps({"type": "identify", "user_id": "user-secret-42",
                                  "traits": {"email": EMAIL, "phone": PHONE,
                                             "first_name": NAME},
                                  "user_hash": signed.hexdigest()}).decode())
            ws.recv()
            ws.send("garbage that earns an error frame")
            ws.recv()
        with pytest.raises(Exception), connect(  # noqa: B017 - refused at the handshake
                f"ws://127.0.0.1:{port}/ws?site=demo", origin="https://evil.example",  # type: ignore[arg-type]
                sock=from_visitor(port)):
            pass
        transport = httpx2.HTTPTransport(local_address=VISITOR_ADDRESS)
        with httpx2.Client(transport=transport) as client:
            headers = {"Authorization": f"Bearer {token}"}
            client.post(f"{url}/api/v1/identify", headers=headers, json={
                "visitor": "visitor-secret-2", "user_id": "user-secret-43",
                "traits": {"email": EMAIL, "phone": PHONE}})
            client.post(f"{url}/api/v1/events", headers=headers, json={"events": [
                {"name": "signup", "user_id": "nobody", "props": {"email": EMAIL}}]})
            client.get(f"{url}/api/v1/visitors/visitor-secret-1",
                       headers={"Authorization": "Bearer pk_wrong_key_that_is_long"})
            client.post(f"{url}/admin/login", data={"password": "wrong"})
            client.get(f"{url}/demo/")
    finally:
        server.terminate()
        logs, _ = server.communicate(timeout=20)
    assert "popin" in logs and "WebSocket" in logs, "the run was logged at all"
    for secret in (VISITOR_ADDRESS, EMAIL, "612345678", NAME, token, "pk_wrong_key"):
        assert secret not in logs, f"{secret!r} is in the logs:\n{logs}"
    if log_format == "json":
        lines = [orjson.loads(line) for line in logs.splitlines()]
        assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        assert {"popin.serve", "popin.rules", "uvicorn.error"} <= {line["logger"]
                                                                   for line in lines}
        assert any(line["message"].startswith('[client] - "WebSocket /ws') for line in lines)


def test_a_json_line_holds_the_traceback_and_fields_scrubbed() -> None:
    """One line per record, traceback included, and nothing private in any of it: what an
    exception's message or a field carries is scrubbed too."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger("popin.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError(f"refused {EMAIL} from {VISITOR_ADDRESS} and [2001:db8::7] with "
                             "Bearer pk_secretsecretsecret at redis://:hunter2@10.1.2.3:6379/0")
        except ValueError:
            logger.exception("the store failed for %s", EMAIL,
                             extra={"site": "demo", "client": VISITOR_ADDRESS,
                                    "contacts": [EMAIL]})
    finally:
        logger.removeHandler(handler)
    (line,) = written.getvalue().splitlines()
    record = orjson.loads(line)
    assert (record["level"], record["logger"], record["site"]) == (
        "error", "popin.test-json", "demo")
    assert record["message"] == "the store failed for [e-mail]"
    assert record["client"] == "[address]" and record["contacts"] == ["[e-mail]"]
    assert record["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: refused [e-mail] from [address] and [[address]] with Bearer [token] " \
           "at redis://[credentials]@[address]:6379/0" in record["exception"]
    for secret in (EMAIL, VISITOR_ADDRESS, "2001:db8::7", "pk_secret", "hunter2", "10.1.2.3"):
        assert secret not in line


WRONG_PASSWORD = "WRONGpw123456"


@pytest.mark.redis
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_store_password_is_never_printed(tmp_path: Path, log_format: str) -> None:
    """A Redis that refuses the store's password: `serve` says why it cannot start, and
    `rules check` why it cannot tell the paused campaigns, without the password; under
    --log-format json the refusal is a JSON line like any other."""
    from conftest import start_redis, stop

    port = free_port()
    redis = start_redis(tmp_path / "redis", port, "--requirepass", "the-right-password-123")
    store = f"redis://:{WRONG_PASSWORD}@127.0.0.1:{port}/0"
    config = tmp_path / "popin.toml"
    config.write_text(f'store = "{store}"\nrules = "{ROOT / "rules"}"\n'
                      '[[sites]]\nkey = "demo"\n')
    try:
        served = subprocess.run(
            [sys.executable, "-m", "popin", "--config", str(config), "serve", "--port",
             str(free_port()), "--store", store, "--log-format", log_format],
            capture_output=True, text=True, timeout=60, cwd=tmp_path)
        checked = subprocess.run(
            [sys.executable, "-m", "popin", "--config", str(config), "rules", "check"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        stop([redis])
    assert served.returncode == 2 and "cannot be opened" in served.stderr
    assert "cannot tell which campaigns are paused" in checked.stdout
    for said in (served.stdout, served.stderr, checked.stdout, checked.stderr):
        assert WRONG_PASSWORD not in said, said
    if log_format == "json":
        lines = [orjson.loads(line) for line in served.stderr.splitlines()]
        assert [line["level"] for line in lines] == ["error"]
        assert lines[0]["message"].startswith("popin: store: redis://")


def test_a_store_url_is_shown_without_its_password() -> None:
    from popin.stores.backends import open_store
    from popin.stores.urls import without_password as shown

    assert shown("redis://app:s3cret@10.0.0.5:6379/0?prefix=p") == \
        "redis://app:[password]@10.0.0.5:6379/0?prefix=p"
    assert shown("redis+cluster://:s3cret@h1:7000,h2:7001") == \
        "redis+cluster://:[password]@h1:7000,h2:7001"
    assert shown("sqlite:///srv/popin.db") == "sqlite:///srv/popin.db"
    with pytest.raises(ValueError) as refused:
        open_store("redis+nope://:s3cret@h:1/0")
    assert "s3cret" not in str(refused.value) and "[password]" in str(refused.value)
