"""Past one process: real `popin serve` processes on one Redis (our own redis-server). A
push posted to one process reaches the visitor's socket on another within a second;
`--workers N` runs N processes on one port, and is refused on the embedded store."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx2
import orjson
import pytest
from websockets.sync.client import ClientConnection, connect

from conftest import ROOT, api_key, free_port, serve, wait_for_port, wait_until

README = ROOT / "README.md"
RULES = """
events: [launch]
rules:
  - id: shipped
    category: transactional
    trigger: {event: shipped}
    cap: {per_session: 100}
    popin: {title: "On its way", body: "<p>{{ trigger.props.parcel }}</p>"}
  - id: welcome
    category: transactional
    trigger: {event: signup}
    popin: {title: "Welcome", body: "<p>once a session</p>"}
  - id: launch
    category: event
    trigger: {event: launch}
    cap: {per_session: 100}
    popin: {title: "New", body: "<p>{{ trigger.props.parcel }}</p>"}
"""


class Cluster:
    """popin processes sharing one Redis, each started as an operator would."""

    def __init__(self, folder: Path, store: str) -> None:
        (folder / "rules").mkdir()
        (folder / "rules" / "shipped.yaml").write_text(RULES)
        self.config = folder / "popin.toml"
        self.config.write_text(f'store = "{store}"\nrules = "rules"\n'
                               '[[sites]]\nkey = "demo"\nholdout = 0\n')
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []

    def key(self, monkeypatch: pytest.MonkeyPatch) -> str:
        return api_key(self.config, monkeypatch)

    def serve(self, *options: str) -> str:
        port = free_port()
        self.processes.append(serve(self.config, port, *options))
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Processes on our redis-server, or (parametrized "redis_cluster_url") on our Redis
    Cluster."""
    server = request.getfixturevalue(getattr(request, "param", "redis_url"))
    nodes = Cluster(tmp_path, f"{server}?prefix=nodes-{uuid.uuid4().hex}")
    try:
        yield nodes
    finally:
        nodes.stop()


@contextmanager
def visit(url: str, visitor: str, session: str = "") -> Iterator[ClientConnection]:
    with connect(f"{url.replace('http', 'ws')}/ws?site=demo",
                 origin=url) as ws:  # type: ignore[arg-type]
        ws.send(orjson.dumps({"type": "hello", "visitor": visitor,
                              "session": session or f"s-{visitor}",
                              "url": f"{url}/demo/"}).decode())
        assert orjson.loads(ws.recv(timeout=5))["type"] == "config"
        yield ws


def post(url: str, token: str, visitor: str, parcel: str,
         name: str = "shipped") -> dict[str, object]:
    answer = httpx2.post(f"{url}/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                         json={"events": [{"name": name, "visitor": visitor,
                                           "props": {"parcel": parcel}}]})
    assert answer.status_code == 200, answer.text
    result: dict[str, object] = answer.json()["results"][0]
    return result


@pytest.mark.parametrize("cluster", ["redis_url", "redis_cluster_url"], indirect=True)
def test_a_push_posted_to_one_process_reaches_a_socket_on_another(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    token = cluster.key(monkeypatch)
    first, second = cluster.serve(), cluster.serve()
    with visit(second, "visitor-on-b-0001") as ws:
        # Presence is written within milliseconds of the hello; give it a moment.
        time.sleep(0.3)
        latencies = []
        for number in range(5):
            started = time.monotonic()
            result = post(first, token, "visitor-on-b-0001", f"parcel-{number}")
            assert (result["shown_live"], result["queued"]) == (1, 0), result
            shown = orjson.loads(ws.recv(timeout=1))
            latencies.append(time.monotonic() - started)
            assert shown["type"] == "show" and f"parcel-{number}" in shown["html"]
            # Clicked away, so that the next may show: the process holding the socket
            # decides, and it knows when a pop-in is on screen.
            ws.send(orjson.dumps({"type": "popin", "id": shown["id"],
                                  "status": "clicked"}).decode())
        assert max(latencies) < 1.0, latencies
        print(f"cross-node push, API answer to frame: {sorted(latencies)}")
        # Timed by the process that wrote the frames, from the other one's API.
        assert 'popin_push_latency_seconds_count{path="relay"} 5.0' in httpx2.get(
            f"{second}/metrics").text
    # The socket is gone: the next push waits in the outbox, on any process.
    time.sleep(0.3)
    result = post(first, token, "visitor-on-b-0001", "parcel-later")
    assert (result["shown_live"], result["queued"]) == (0, 1)
    with visit(first, "visitor-on-b-0001") as ws:
        assert "parcel-later" in orjson.loads(ws.recv(timeout=5))["html"]


@pytest.mark.parametrize("shared", [False, True], ids=["own sessions", "one visit"])
def test_a_waiting_push_shows_in_one_of_two_tabs_opened_on_two_processes(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch, shared: bool) -> None:
    token = cluster.key(monkeypatch)
    first, second = cluster.serve(), cluster.serve()
    assert post(first, token, "visitor-two-tabs", "", name="signup")["queued"] == 1
    with visit(first, "visitor-two-tabs", "session-tab-0001") as one, \
            visit(second, "visitor-two-tabs",
                  "session-tab-0001" if shared else "session-tab-0002") as two:
        shows = []
        for ws in (one, two):
            with pytest.raises(TimeoutError):
                while True:
                    frame = orjson.loads(ws.recv(timeout=1))
                    shows.append(frame["rule"])
        assert shows == ["welcome"]


@pytest.mark.parametrize("cluster", ["redis_url", "redis_cluster_url"], indirect=True)
def test_a_session_moves_to_another_process_and_keeps_its_caps(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The welcome rule shows once a session (the default cap). Shown on A, the session
    continues on B, where it is not shown again; the same when A stops instead of the
    socket closing. A new session on B is welcomed: the cap is the session's."""
    token = cluster.key(monkeypatch)
    first, second = cluster.serve(), cluster.serve()
    for visitor, stop_first in (("visitor-moves-0001", False), ("visitor-moves-0002", True)):
        with visit(first, visitor, "session-moving") as ws:
            time.sleep(0.2)
            assert post(first, token, visitor, "", "signup")["shown_live"] == 1
            shown = orjson.loads(ws.recv(timeout=1))
            assert shown["rule"] == "welcome"
            ws.send(orjson.dumps({"type": "popin", "id": shown["id"],
                                  "status": "shown"}).decode())
            time.sleep(0.2)
            if stop_first:
                cluster.processes[0].terminate()
                cluster.processes[0].wait(timeout=20)
        time.sleep(0.3)
        with visit(second, visitor, "session-moving") as ws:
            time.sleep(0.2)
            result = post(second, token, visitor, "", "signup")
            assert (result["shown_live"], result["queued"]) == (0, 0), \
                "the session's cap came along: no second welcome"
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)
        with visit(second, visitor, "session-new-one") as ws:
            time.sleep(0.2)
            assert post(second, token, visitor, "", "signup")["shown_live"] == 1
            assert orjson.loads(ws.recv(timeout=1))["rule"] == "welcome"


@pytest.mark.parametrize("cluster", ["redis_url", "redis_cluster_url"], indirect=True)
def test_an_event_posted_to_another_process_is_decided_with_the_live_session(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process holding the socket decides: a rule capped once a session shows once
    for two events posted to the other process, and a dismiss there a moment ago (not yet
    in any snapshot) keeps the next event's pop-in away."""
    token = cluster.key(monkeypatch)
    first, second = cluster.serve(), cluster.serve()
    with visit(second, "visitor-capped-0001") as ws:
        time.sleep(0.3)
        results = [post(first, token, "visitor-capped-0001", "", "signup") for _ in range(2)]
        assert [(result["shown_live"], result["queued"]) for result in results] == [
            (1, 0), (0, 0)], results
        shown = orjson.loads(ws.recv(timeout=1))
        assert shown["rule"] == "welcome"
        ws.send(orjson.dumps({"type": "popin", "id": shown["id"],
                              "status": "dismissed"}).decode())
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        # A campaign of the budgeted kind: the quiet period after any dismiss holds it.
        result = post(first, token, "visitor-capped-0001", "after-dismiss", "launch")
        assert (result["shown_live"], result["queued"]) == (0, 0), result
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
    # With the socket gone the other process decides alone, and the pop-in waits.
    time.sleep(0.3)
    result = post(first, token, "visitor-capped-0001", "parcel-away")
    assert (result["shown_live"], result["queued"]) == (0, 1), result


def test_workers_share_one_port_and_every_push_arrives(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    token = cluster.key(monkeypatch)
    url = cluster.serve("--workers", "2")
    parent = cluster.processes[-1].pid
    children = Path(f"/proc/{parent}/task/{parent}/children")
    assert wait_until(lambda: len(children.read_text().split()) == 2, 10)
    visitors = [f"visitor-worker-{number:04d}" for number in range(6)]
    with ExitStack() as stack:
        sockets = [stack.enter_context(visit(url, visitor)) for visitor in visitors]
        time.sleep(0.3)
        for visitor, ws in zip(visitors, sockets, strict=True):
            # A new connection each time: either worker may take the request.
            result = post(url, token, visitor, f"for-{visitor}")
            assert result["shown_live"] == 1, result
            assert f"for-{visitor}" in orjson.loads(ws.recv(timeout=1))["html"]


def test_workers_are_refused_on_the_embedded_store(tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-m", "popin", "serve", "--workers", "2", "--store",
                          f"sqlite:///{tmp_path / 'popin.db'}", "--port", str(free_port())],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 2
    assert ran.stderr == ("popin: --workers 2 needs a Redis store (--store redis://host:6379/0):"
                          " the embedded SQLite store keeps live sessions in one process\n")


def nginx_config(folder: Path, upstreams: list[str], port: int) -> Path:
    """The README's nginx block, pointed at the two popin processes and a test certificate,
    inside a main configuration that keeps everything in `folder`."""
    (block,) = re.findall(r"```nginx\n(.*?)```", README.read_text(), re.DOTALL)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True)
    block = (block.replace("10.0.0.11:8000", upstreams[0])
             .replace("10.0.0.12:8000", upstreams[1])
             .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
             .replace("/etc/letsencrypt/live/popin.example.com/fullchain.pem",
                      str(folder / "cert.pem"))
             .replace("/etc/letsencrypt/live/popin.example.com/privkey.pem",
                      str(folder / "key.pem")))
    temporary = "\n".join(f"    {kind}_temp_path {folder / kind};"
                          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = folder / "nginx.conf"
    config.write_text(f"{'user root;' if os.geteuid() == 0 else ''}\n"
                      f"daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
                      f"error_log {folder / 'error.log'};\nevents {{}}\n"
                      f"http {{\n    access_log off;\n{temporary}\n{block}}}\n")
    return config


def test_two_processes_behind_the_readme_nginx_over_tls(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is not installed: scripts/test installs it (apt-get install "
                    "nginx-light)")
    text = cluster.config.read_text().replace('rules = "rules"\n',
                                              'rules = "rules"\ntrusted_proxies = ["127.0.0.1"]\n')
    cluster.config.write_text(text)
    token = cluster.key(monkeypatch)
    nodes = [cluster.serve(), cluster.serve()]
    port = free_port()
    folder = tmp_path / "nginx"
    folder.mkdir()
    config = nginx_config(folder, [node.removeprefix("http://") for node in nodes], port)
    checked = subprocess.run([binary, "-t", "-c", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    nginx = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    try:
        wait_for_port(port)
        for number in range(4):
            visitor = f"visitor-behind-nginx-{number}"
            with connect(f"wss://127.0.0.1:{port}/ws?site=demo", origin=url,  # type: ignore[arg-type]
                         ssl=insecure) as ws:
                ws.send(orjson.dumps({"type": "hello", "visitor": visitor,
                                      "session": f"session-{number}", "url": f"{url}/demo/"}
                                     ).decode())
                assert orjson.loads(ws.recv(timeout=5))["type"] == "config"
                time.sleep(0.2)
                # nginx sends each new connection to the next process in turn.
                answer = httpx2.post(f"{url}/api/v1/events", verify=False, headers={
                    "Authorization": f"Bearer {token}"}, json={"events": [
                        {"name": "shipped", "visitor": visitor,
                         "props": {"parcel": f"nginx-{number}"}}]})
                assert answer.json()["results"][0]["shown_live"] == 1, answer.text
                assert f"nginx-{number}" in orjson.loads(ws.recv(timeout=1))["html"]
        relayed = [httpx2.get(f"{node}/metrics").text for node in nodes]
        assert any('kind="relay.referred"} ' in text for text in relayed), \
            "some events went from one process to the other, decided where the socket was"
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


def test_a_session_snapshot_carries_what_continues_it() -> None:
    from popin.core.session import Session
    from popin.core.site import Site
    from popin.core.visitor.facts import Facts
    from popin.core.visitor.profile import Profile

    def fresh() -> Session:
        profile = Profile("visitor-snapshot-1")
        return Session("demo", "session-snapshot", profile, Facts(profile, Site("demo", "D")))

    before = fresh()
    before.shown, before.exclusive_used = {"welcome": 1}, {"offers"}
    before.pushes, before.reported = {"p.1": "welcome"}, {("p.1", "shown")}
    before.quiet_until, before.started, before.timers = 50.0, 10.0, {"cart-reminder": 70.0}
    before.page_hits, before.search, before.visit_pending = {"/skis": 2}, "wax", True
    before.open_push = "p.1"
    after = fresh()
    after.restore(orjson.loads(orjson.dumps(before.snapshot())))
    assert after.snapshot() == before.snapshot() != fresh().snapshot()
    assert after.open_push is None, "what is on screen is the page's, not the session's"


def test_redis_stopped_for_ten_seconds_under_two_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis (AOF on) stops for ten seconds and comes back: sockets stay open, /healthz
    says degraded meanwhile, the API refuses what it cannot keep (503) and a retry with the
    same key is applied after; what was acknowledged before is still there; pushes cross
    processes again."""
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()

    def redis_server() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port)
        return process

    redis = redis_server()
    (tmp_path / "popin").mkdir()
    cluster = Cluster(tmp_path / "popin", f"redis://127.0.0.1:{port}/0")
    try:
        token = cluster.key(monkeypatch)
        first, second = cluster.serve(), cluster.serve()
        before = post(first, token, "visitor-away-0001", "before the outage")
        assert before["queued"] == 1
        headers = {"Authorization": f"Bearer {token}"}
        batch = {"events": [{"name": "shipped", "visitor": "visitor-stays-0001",
                             "props": {"parcel": "after"}, "idempotency_key": "outage-1"}]}
        with visit(second, "visitor-stays-0001") as ws:
            redis.terminate()
            redis.wait(timeout=10)
            stopped = time.monotonic()
            health = httpx2.get(f"{first}/healthz")
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            refused = httpx2.post(f"{first}/api/v1/events", headers=headers, json=batch,
                                  timeout=30)
            assert refused.status_code == 503, refused.text
            ws.send(orjson.dumps({"type": "scroll", "percent": 50}).decode())
            time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
            redis = redis_server()
            for url in (first, second):
                assert wait_until(lambda url=url: httpx2.get(f"{url}/healthz").status_code
                                  == 200, 20)
            # The relay has subscribed again and written its presence back.
            time.sleep(2.5)
            retried = httpx2.post(f"{first}/api/v1/events", headers=headers, json=batch)
            assert retried.json()["results"][0] | {"status": "applied", "shown_live": 1} == \
                retried.json()["results"][0], retried.text
            assert "after" in orjson.loads(ws.recv(timeout=2))["html"], \
                "the socket stayed open through the outage"
        with visit(second, "visitor-away-0001") as ws:
            assert "before the outage" in orjson.loads(ws.recv(timeout=5))["html"]
    finally:
        cluster.stop()
        redis.terminate()
        redis.wait(timeout=10)
