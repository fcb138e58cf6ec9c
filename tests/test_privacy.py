"""What an install keeps on disk about visitors: files only their owner reads, and an
erased visitor gone from the raw bytes, not only from the answers."""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from conftest import make_key, run, settings_with_rules
from popin.cli import main
from popin.config import Settings
from popin.core.site import Site
from popin.web.app import create_app

RULES = """
events: [help_wanted, adviser_requested]
rules:
  - id: welcome
    category: transactional
    trigger: {event: signup}
    popin: {title: "Welcome!", body: "<p>Hello.</p>"}
  - id: help
    category: functional
    trigger: {event: help_wanted}
    assist: {title: "Can we help?", body: "<p>Tell us how.</p>", channels: [callback, email]}
  - id: adviser
    category: functional
    trigger: {event: adviser_requested}
    slots: {calendar: advisers, title: Book a call, body: <p>Pick a time.</p>}
"""
ORIGIN = {"origin": "http://testserver"}
PASSWORD = "correct horse battery"
VISITOR, USER = "visitor-qx7-erased", "user-qx7-erased"
NAME, EMAIL, PHONE = "Quintessa Vexworth", "quintessa.vexworth@example.org", "+33 6 98 76 54 32"
KEPT = "visitor-kept-0001"


@pytest.fixture
def umask() -> Iterator[None]:
    """The usual umask, under which a file made with the defaults is world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.mark.usefixtures("umask")
def test_the_store_and_the_secret_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    settings = settings_with_rules(tmp_path, RULES)
    token = make_key(settings, "events")
    with TestClient(create_app(settings)) as client:
        for number in range(3):
            response = client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                                   json={"events": [{"name": "signup",
                                                     "visitor": f"visitor-mode-{number}"}]})
            assert response.status_code == 200
        files = {name: tmp_path / name for name in ("popin.db", "popin.db-wal", "popin.db-shm",
                                                    "popin.secret")}
        assert {name: mode(path) for name, path in files.items()} == dict.fromkeys(files, "0o600")


@pytest.mark.usefixtures("umask")
def test_files_of_an_older_install_are_narrowed_at_start(tmp_path: Path) -> None:
    settings = settings_with_rules(tmp_path, RULES)
    make_key(settings, "events")
    secret = tmp_path / "popin.secret"
    secret.write_text("an older install's secret, kept as it was")
    for path in (tmp_path / "popin.db", secret):
        path.chmod(0o644)
    with TestClient(create_app(settings)):
        assert (mode(tmp_path / "popin.db"), mode(secret)) == ("0o600", "0o600")
    assert secret.read_text() == "an older install's secret, kept as it was"


@pytest.mark.usefixtures("umask")
def test_the_secret_is_private_from_its_first_byte(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Made owner-only, not narrowed after it was written: in between, anyone could read it."""
    from popin.config import load_secret

    monkeypatch.setattr(Path, "chmod", lambda *_args, **_kwargs: None)
    load_secret(Settings(store=f"sqlite:///{tmp_path / 'popin.db'}"))
    assert mode(tmp_path / "popin.secret") == "0o600"


def test_two_first_starts_agree_on_one_secret(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes starting at once both find no secret; the second to finish must not
    replace the first one's, whose links are already out."""
    import itertools
    import secrets
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from popin.config import load_secret

    made = secrets.token_urlsafe
    both_looked = threading.Barrier(2)
    order = itertools.count()

    def token(length: int) -> str:
        late = next(order)
        both_looked.wait(timeout=5)
        time.sleep(0.2 * late)
        return made(length)

    monkeypatch.setattr(secrets, "token_urlsafe", token)
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(lambda _n: load_secret(settings), range(2))
    assert first == second == (tmp_path / "popin.secret").read_text()
    assert [path.name for path in tmp_path.iterdir()] == ["popin.secret"]


def raw_bytes(database: Path) -> bytes:
    """The store as a disk reader sees it: the file and its write-ahead log."""
    wal = Path(f"{database}-wal")
    return database.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def traces(database: Path) -> list[str]:
    found = raw_bytes(database)
    return [text for text in (VISITOR, USER, NAME, NAME.split()[0], EMAIL, "98765432")
            if text.encode() in found]


def visit(client: TestClient, visitor: str, event: str, form: str,
          fields: dict[str, str]) -> str:
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(orjson.dumps({"type": "hello", "visitor": visitor,
                                   "session": f"session-{visitor}",
                                   "url": "http://testserver/demo/cart.html"}).decode())
        ws.receive_json()
        ws.send_text(orjson.dumps({"type": "event", "name": event}).decode())
        push = ws.receive_json()
        ws.send_text(orjson.dumps({"type": "popin", "id": push["id"],
                                   "status": "shown"}).decode())
        if form == "book":
            fields = {**fields, "slot": re.findall(r'name="slot"\s+value="([0-9.]+)"',
                                                   push["html"])[0]}
        ws.send_text(orjson.dumps({"type": "form", "id": push["id"], "form": form,
                                   "fields": fields}).decode())
        html: str = ws.receive_json()["html"]
        return html


def test_an_erased_visitor_is_gone_from_the_files_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_with_rules(tmp_path, RULES, sites={"demo": Site(
        "demo", "Nordic Trail", notify_url="http://127.0.0.1:9/owner")})
    database = tmp_path / "popin.db"
    token = make_key(settings, "events", "profiles")
    headers = {"Authorization": f"Bearer {token}"}
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", "--store", settings.store, "set-password", "--password-stdin"]) == 0
    person = {"name": NAME, "contact": PHONE, "consent": "yes"}
    with TestClient(create_app(settings)) as client:
        identified = client.post("/api/v1/identify", headers=headers, json={
            "visitor": VISITOR, "user_id": USER,
            "traits": {"first_name": NAME.split()[0], "email": EMAIL}})
        assert identified.status_code == 200
        assert "Booked:" in visit(client, VISITOR, "adviser_requested", "book",
                                  {"channel": "phone", **person})
        assert "Thank you" in visit(client, VISITOR, "help_wanted", "lead",
                                    {"channel": "callback", **person})
        assert "Booked:" in visit(client, KEPT, "adviser_requested", "book",
                                  {"channel": "phone", **person, "name": "Bertrand Kept",
                                   "contact": "+33 6 11 22 33 44"})
        client.get(f"/api/v1/visitors/{VISITOR}", headers=headers)  # written, not pending
        login = client.get("/admin/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', login)[1]  # type: ignore[index]
        client.post("/admin/login", data={"csrf": csrf, "password": PASSWORD})
        assert VISITOR in client.get("/admin/campaigns/adviser").text
        assert set(traces(database)) >= {VISITOR, USER, NAME}, "the test sees the bytes"

        assert client.delete(f"/api/v1/users/{USER}", headers=headers).status_code == 204
        # The WAL too: what it held from before the erasure was checkpointed away.
        assert traces(database) == []
        page = client.get("/admin/campaigns/adviser").text
        assert VISITOR not in page and KEPT in page, "the recent activity forgets them"
        bookings = client.get("/api/v1/bookings", headers=headers, params={
            "day": "2000-01-01"})
        assert bookings.status_code == 200
    assert traces(database) == []
    assert b"Bertrand Kept" in raw_bytes(database), "the other visitor is still there"


def test_erased_rows_are_overwritten_whatever_sqlites_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian builds SQLite with secure_delete on; other builds (macOS, some wheels) do not.
    The store turns it on itself, or deleted rows stay in the file's free space."""
    import sqlite3

    from conftest import run
    from popin.core.visitor.profile import Profile
    from popin.stores.sqlite import SQLiteStore

    connect = sqlite3.connect

    def built_without_secure_delete(*args: object, **kwargs: object) -> sqlite3.Connection:
        db = connect(*args, **kwargs)  # type: ignore[arg-type]
        db.execute("PRAGMA secure_delete=OFF")
        return db

    monkeypatch.setattr(sqlite3, "connect", built_without_secure_delete)
    database = tmp_path / "popin.db"

    async def scenario() -> None:
        store = SQLiteStore(database)
        for number in range(50):
            profile = Profile(f"visitor-{number:04d}")
            profile.first_name = NAME if number == 7 else "Bertrand"
            await store.save_profile("demo", profile)
        await store.erase_visitor("demo", "visitor-0007")
        assert raw_bytes(database).count(NAME.encode()) == 0
        await store.close()

    run(scenario())


def test_the_minute_sweep_forgets_every_visitor_past_the_retention(tmp_path: Path) -> None:
    """In batches (other work runs between them), until none is left past it."""
    from popin.core.visitor.profile import Profile
    from popin.live.hub import Hub
    from popin.stores.retention import DAY_SECONDS, FORGET_BATCH
    from popin.stores.sqlite import SQLiteStore
    from popin.web.app import _forget_unseen

    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "popin.db")
        store.retention.keep("demo", 1)
        store.retention.clock = lambda: 1000.0
        await store.save_profiles([(("demo", f"visitor-{number:04d}"),
                                    Profile(f"visitor-{number:04d}"))
                                   for number in range(2 * FORGET_BATCH + 5)])
        store.retention.clock = lambda: 1000.0 + DAY_SECONDS
        await store.save_profile("demo", Profile("visitor-seen-today"))
        hub = Hub(store, {}, {"demo": Site("demo", "Demo")}, clock=lambda: 1001.0 + DAY_SECONDS)
        assert await _forget_unseen(hub, "demo") == 2 * FORGET_BATCH + 5
        assert await store.load_profile("demo", "visitor-0000") is None
        assert await store.load_profile("demo", "visitor-seen-today") is not None
        await store.close()

    run(scenario())
