"""Shared fixtures: a private redis-server, a live popin server, Debian's Chromium."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx2
import pytest
import uvicorn

from popin.config import Settings
from popin.core.site import Site
from popin.web.app import create_app, uvicorn_options

ROOT = Path(__file__).resolve().parent.parent
# The tests say which settings they use: a POPIN_CONFIG of the shell running them is not one.
os.environ.pop("POPIN_CONFIG", None)
# Screenshots and other things a reviewer may want to look at.
OUTPUT = Path(os.environ.get("POPIN_TEST_OUTPUT", ROOT / "test-output"))
CHROMIUM = os.environ.get("POPIN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

T = TypeVar("T")
# For a TestClient, a client on this machine: /metrics and the details of /healthz are for
# loopback (or a token), and TestClient's own address, "testclient", is neither.
LOOPBACK = ("127.0.0.1", 50000)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end, also from tests where Playwright holds the event loop."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, coroutine).result()


def make_key(settings: Settings, *scopes: str, revoked: bool = False) -> str:
    """An API key for the demo site, put straight into the settings' store; its token."""
    from popin.stores.backends import open_store
    from popin.stores.keys import new_key

    token, key = new_key("demo", scopes, "test", 1.0)
    if revoked:
        key = key.revoke(2.0)

    async def put() -> None:
        store = open_store(settings.store)
        await store.open()
        await store.put_key(key)
        await store.close()

    run(put())
    return token


def wait_until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of our own on a free port; the machine's shared one is never touched."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: the README's test command installs it "
                    "(apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=10)


def start_redis(folder: Path, port: int, *options: str) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: the README's test command installs it "
                    "(apt-get install redis-server)")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
    except TimeoutError:
        stop([process])
        raise
    return process


def start_sentinel(folder: Path, port: int, master: str, master_port: int) -> \
        subprocess.Popen[bytes]:
    """`redis-server --sentinel` watching a master (quorum 1: the only Sentinel decides)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "sentinel.conf"
    # Sentinel rewrites its file with what it learns: one per Sentinel, writable.
    config.write_text(f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                      f"sentinel monitor {master} 127.0.0.1 {master_port} 1\n"
                      f"sentinel down-after-milliseconds {master} 1000\n"
                      f"sentinel failover-timeout {master} 10000\n")
    process = subprocess.Popen([str(shutil.which("redis-server")), str(config), "--sentinel"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
    except TimeoutError:
        stop([process])
        raise
    return process


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis Cluster of our own: three masters on free ports (and free cluster-bus ports),
    slots assigned by `redis-cli --cluster create`, stopped at the end of the run."""
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.fail("redis-cli is not installed: the README's test command installs it "
                    "(apt-get install redis-server)")
    ports = free_ports(6)
    nodes, buses = ports[:3], ports[3:]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port, bus in zip(nodes, buses, strict=True):
            folder = tmp_path_factory.mktemp(f"cluster-{port}")
            processes.append(start_redis(
                folder, port, "--cluster-enabled", "yes", "--cluster-port", str(bus),
                "--cluster-config-file", str(folder / "nodes.conf")))
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in nodes),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)

        def ready() -> bool:
            return all("cluster_state:ok" in subprocess.run(
                [cli, "-p", str(port), "cluster", "info"], capture_output=True,
                text=True).stdout for port in nodes)

        wait_until(ready, timeout=30)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in nodes)
    finally:
        stop(processes)


@pytest.fixture(scope="session")
def redis_sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A master of our own and a Sentinel watching it; the URL names the Sentinel."""
    folder = tmp_path_factory.mktemp("sentinel")
    master_port, sentinel_port = free_ports(2)
    processes = [start_redis(folder / "master", master_port)]
    try:
        processes.append(start_sentinel(folder / "sentinel", sentinel_port, "popin-test",
                                        master_port))
        yield f"redis+sentinel://127.0.0.1:{sentinel_port}/popin-test"
    finally:
        stop(processes)


FIXTURES = Path(__file__).resolve().parent / "fixtures"


class LiveServer:
    """popin on a real uvicorn in a thread, configured exactly as `popin serve` runs it."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        config = uvicorn.Config(create_app(self.settings), host="127.0.0.1", port=self.port,
                                log_level="warning", **uvicorn_options(self.settings))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None


def settings_with_rules(folder: Path, rules: str, **overrides: Any) -> Settings:
    """Settings for a test: its own store file and one rule file holding `rules`."""
    (folder / "rules").mkdir(exist_ok=True)
    (folder / "rules" / "rules.yaml").write_text(rules)
    return Settings(store=f"sqlite:///{folder / 'popin.db'}", rules=folder / "rules",
                    reload=False, **overrides)


StoreFactory = Callable[[], Any]


@pytest.fixture(params=["sqlite", *(pytest.param(name, marks=pytest.mark.redis)
                                    for name in ("redis", "cluster", "sentinel"))])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Every backend behind one contract: SQLite, one redis-server, a 3-master Redis
    Cluster, a master found through a Sentinel. A factory, so a test can open the same
    store twice (durability, two processes)."""
    from popin.stores.backends import open_store

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'popin.db'}"
    else:
        # Each test gets its own key prefix: no flushing, no interference.
        server = request.getfixturevalue({"redis": "redis_url", "cluster": "redis_cluster_url",
                                          "sentinel": "redis_sentinel_url"}[request.param])
        url = f"{server}?prefix=test-{uuid.uuid4().hex}"
    return lambda: open_store(url)


@pytest.fixture(autouse=True)
def fixed_assignment_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's server makes its own secret, so which visitors fall in a control group
    would change from run to run; tests with fixed visitor ids get the same groups every
    time instead (tests of the keyed hash itself call it directly)."""
    monkeypatch.setattr("popin.web.app._assignment_key",
                        lambda _secret, site: f"test-assignment-key:{site}")


@pytest.fixture
def live_settings(tmp_path: Path) -> Settings:
    # No control group: a browser's visitor id is random, and would be held out of some
    # campaign now and then. Tests of the control group pin their visitors instead.
    return Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=ROOT / "rules",
                    sites={"demo": Site("demo", "Demo shop", holdout=0)})


@pytest.fixture
def live_server(live_settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(live_settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright; never a downloaded browser. Per module: the
    sync API holds an event loop on the main thread until it stops, and tests after it
    must be free to run their own."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: the README's test command installs it "
                    "(apt-get install chromium); browser tests cannot pass without it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    folder = OUTPUT / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the widget's size on every run, so each change's effect on it is visible."""
    from popin.web.widget import BUILT, CONSENT_BUILT, SIZE_LIMIT_GZIPPED, size_of

    size = size_of(BUILT.read_text())
    terminalreporter.write_line(
        f"widget static/popin.min.js: {size.minified} bytes minified, {size.gzipped} bytes "
        f"gzipped (limit {SIZE_LIMIT_GZIPPED})")
    glue = size_of(CONSENT_BUILT.read_text())
    terminalreporter.write_line(
        f"consent glue static/popin-consent.min.js (pages with a consent tool only): "
        f"{glue.minified} bytes minified, {glue.gzipped} bytes gzipped")


class FixtureSite:
    """Serves tests/fixtures from another origin, as a customer's site would."""

    def __init__(self, popin_url: str) -> None:
        self.port = free_port()
        handler = partial(_FixtureHandler, popin_url, directory=str(FIXTURES))
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def strict_policy(popin_url: str) -> str:
    """What README tells a shop with a strict policy to send: popin's script and socket
    origins, and nothing for styles."""
    socket = popin_url.replace("http", "ws", 1)
    return (f"default-src 'self'; script-src 'self' {popin_url}; "
            f"connect-src 'self' {socket}; style-src 'self'; img-src 'self' data:")


# What the fixture pages' origin serves: HTML pages (popin's address filled in) and scripts.
FIXTURE_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class _FixtureHandler(SimpleHTTPRequestHandler):
    def __init__(self, popin_url: str, *args: Any, **kwargs: Any) -> None:
        self.popin_url = popin_url
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        # SPA routes serve the app shell, as a real SPA host does.
        name = "spa.html" if self.path.startswith("/app/") else urlsplit(self.path).path
        path = (FIXTURES / name.lstrip("/")).resolve()
        if (FIXTURES not in path.parents or not path.is_file()
                or path.suffix not in FIXTURE_TYPES):
            self.send_error(404)
            return
        body = path.read_bytes()
        if path.suffix == ".html":
            body = body.replace(b"__POPIN__", self.popin_url.encode())
        self.send_response(200)
        if path.name == "strict.html":
            self.send_header("Content-Security-Policy", strict_policy(self.popin_url))
        self.send_header("Content-Type", FIXTURE_TYPES[path.suffix])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fixture_site(tmp_path: Path) -> Iterator[tuple[FixtureSite, LiveServer]]:
    port = free_port()
    site = FixtureSite(f"http://127.0.0.1:{port}")
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=FIXTURES / "rules",
                        # No control groups: browsers' visitor ids are random.
                        sites={"fixture": Site("fixture", origins=(site.url,), holdout=0),
                               "private": Site("private", origins=(site.url,),
                                               consent="required", holdout=0),
                               "demo": Site("demo", holdout=0)})
    server = LiveServer(settings, port).start()
    try:
        yield site, server
    finally:
        server.stop()
        site.close()


def serve(config: Path, port: int, *options: str) -> subprocess.Popen[bytes]:
    """`popin serve` as an operator starts it, in its own process; back once it answers."""
    server = subprocess.Popen([sys.executable, "-m", "popin", "--config", str(config), "serve",
                               "--port", str(port), *options], cwd=config.parent,
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
    """A new events key for the config's site, made as README says; its token."""
    from popin.cli import main

    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert main(["--config", str(config), "keys", "create", "--scope", "events"]) == 0
    return next(word for word in sys.stdout.getvalue().split() if word.startswith("pk_"))


def workers_of(server: subprocess.Popen[bytes], count: int, gone: int = 0) -> list[int]:
    """The pids of `popin serve --workers N`'s workers, once `count` of them run (and the
    worker `gone` is no longer among them: the supervisor has reaped and replaced it)."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children")

    def running() -> list[int] | None:
        pids = [int(pid) for pid in children.read_text().split()]
        return pids if len(pids) == count and gone not in pids else None

    found: list[int] = wait_until(running, 20)
    return found


def socket_holder(client: socket.socket, server_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server side of a TCP connection on 127.0.0.1 (its
    /proc/net/tcp line, whose socket inode one of the processes has open)."""
    client_port = client.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1].endswith(f":{server_port:04X}")
                and fields[2].endswith(f":{client_port:04X}")):
            inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(descriptor) in inodes:
                    return pid
            except OSError:
                continue  # closed meanwhile
    return None
