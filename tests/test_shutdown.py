"""A clean stop (SIGTERM, Ctrl-C) writes everything the server was given: visitors come
one after another, some leave at once (hello and a dwell, then close), the others are
still connected when `popin serve` is stopped. Afterwards every one of them has a stored
profile, and those who left have what their last event changed, with one process and
with `--workers 2`, on SQLite and on a redis-server of the tests' own. Before the fix, 6
to 10 of the 10 who left had no profile in every run: a hello whose answer could not be
sent (the socket had closed meanwhile) was never written, nor anything after it."""

from __future__ import annotations

import contextlib
import signal
import uuid
from pathlib import Path

import orjson
import pytest
from websockets.sync.client import ClientConnection, connect

from conftest import free_port, run, serve
from popin.core.visitor.profile import Profile
from popin.stores.backends import open_store

VISITORS = 20


def _config(tmp_path: Path, store: str) -> Path:
    (tmp_path / "rules").mkdir()
    config = tmp_path / "popin.toml"
    config.write_text(f'store = "{store}"\nrules = "rules"\n'
                      '[[sites]]\nkey = "demo"\nholdout = 0\n')
    return config


def _stored(store_url: str, visitors: list[str]) -> dict[str, Profile]:
    async def read() -> dict[str, Profile]:
        store = open_store(store_url)
        await store.open()
        try:
            found = {visitor: await store.load_profile("demo", visitor)
                     for visitor in visitors}
            return {visitor: profile for visitor, profile in found.items()
                    if profile is not None}
        finally:
            await store.close()
    return run(read())


def _visit(sockets: contextlib.ExitStack, port: int, visitor: str, stays: bool) -> None:
    url = f"http://127.0.0.1:{port}"
    ws: ClientConnection = sockets.enter_context(connect(
        f"ws://127.0.0.1:{port}/ws?site=demo", origin=url,  # type: ignore[arg-type]
        open_timeout=10))
    ws.send(orjson.dumps({"type": "hello", "visitor": visitor, "session": f"s-{visitor}",
                          "url": f"{url}/demo/"}).decode())
    if stays:
        # The config answers the hello: the server has taken the visit by then.
        assert orjson.loads(ws.recv(timeout=10))["type"] == "config"
    ws.send(orjson.dumps({"type": "dwell", "keyword": "waxing", "seconds": 5}).decode())
    if not stays:
        # Closed before any answer: the server reads both frames before the close.
        ws.close()


def _stop_with_visitors(store_url: str, config: Path, *options: str) -> None:
    port = free_port()
    run_id = uuid.uuid4().hex[:8]
    visitors = [f"v-{run_id}-{index}" for index in range(VISITORS)]
    left = visitors[::2]
    server = serve(config, port, *options)
    try:
        with contextlib.ExitStack() as sockets:
            for visitor in visitors:
                _visit(sockets, port, visitor, stays=visitor not in left)
            # SIGTERM while the others' sockets are still open.
            server.send_signal(signal.SIGTERM)
            # uvicorn raises the signal again once its shutdown is done: -SIGTERM is a
            # clean stop too.
            assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
    stored = _stored(store_url, visitors)
    lost = [visitor for visitor in visitors if visitor not in stored]
    assert lost == [], f"{len(lost)} of {VISITORS} profiles lost at a clean stop"
    assert all(stored[visitor].visits == 1 for visitor in visitors)
    # A visitor still connected at the stop may have a dwell unread (uvicorn stops reading
    # when it closes the socket); one who closed had both frames read.
    assert all(stored[visitor].interests == {"waxing": 5.0} for visitor in left), \
        "the last event of a visitor who left was lost"


def test_a_clean_stop_writes_every_profile_on_sqlite(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'popin.db'}"
    _stop_with_visitors(store, _config(tmp_path, store))


@pytest.mark.redis
@pytest.mark.parametrize("workers", [1, 2])
def test_a_clean_stop_writes_every_profile_on_redis(tmp_path: Path, redis_url: str,
                                                    workers: int) -> None:
    _stop_with_visitors(redis_url, _config(tmp_path, redis_url), "--workers", str(workers))
