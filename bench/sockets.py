"""popin against a bare `websockets` server, side by side, in one run: throughput at
saturation, push latency at half load, memory per idle connection, connections opened
per second; then the engine alone and the widget's size.

    python bench/sockets.py [--quick] [--json bench/results/sockets.json]

Each server runs in its own process on core 0; the load comes from several client
processes on the other cores, over real WebSockets on loopback, speaking popin's
protocol: a hello with a site key and an Origin, then batches of ten messages (pageviews,
keyword dwell, scroll, idle, custom events, the acknowledgement of the last pop-in) whose
tenth, a custom event, is answered with a pop-in. The bare server (bench/bare_server.py)
parses each message with orjson and answers one in ten with a payload of the same size.
popin runs the shipped playbook plus 100 extra rules and a bench rule, on the embedded
store, configured as `popin serve` runs it. A third server, bench/ceiling_server.py, is
the bare one running popin's session on every message and nothing else: the rules'
own cost, at best. Every load is bounded in connections and
seconds, and only ever aimed at 127.0.0.1.

The figures are ratios to the bare server measured in the same run: absolute numbers
move from machine to machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = {0}
HOST = "127.0.0.1"

BENCH_RULES = """
campaign: Bench
events: [bench_ping, video_played, filter_used]
rules:
  - id: bench-ping
    category: functional
    trigger: {event: bench_ping}
    popin: {title: "Ping {{ trigger.props.n }}", body: "<p>A pop-in of about the usual size, with
      a line of text that a person would read, and a call to action below it.</p>",
      cta: {label: Open, url: /demo/}}
    cap: {per_session: 1000000}
"""
# Rules that the stream can reach the index of, but whose conditions or thresholds do not
# hold: the cost of a busy rule set, not of pop-ins.
EXTRA_RULE = [
    "  - {{id: extra-{i}, trigger: {{event: video_played}}, when: {{visits: {{min: {v}}}}}, "
    "tag: extra-{i}}}",
    "  - {{id: extra-{i}, trigger: {{pageview: /demo/section{i}/*}}, popin: {{title: t, "
    "body: b}}}}",
    "  - {{id: extra-{i}, trigger: {{dwell: {{keyword: topic{i}, seconds: 30}}}}, tag: t{i}}}",
    "  - {{id: extra-{i}, trigger: {{scroll: {p}}}, when: {{country: ZZ}}, tag: t{i}}}",
    "  - {{id: extra-{i}, trigger: {{event: filter_used}}, when: {{cart_items: {{min: 50}}}}, "
    "popin: {{title: t, body: b}}}}",
]


def make_rules(folder: Path) -> None:
    folder.mkdir()
    for path in (ROOT / "rules").glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    (folder / "bench.yaml").write_text(BENCH_RULES)
    extra = [EXTRA_RULE[i % len(EXTRA_RULE)].format(i=i, v=1000 + i, p=91 + i % 9)
             for i in range(100)]
    (folder / "extra.yaml").write_text("campaign: Extra\nrules:\n" + "\n".join(extra) + "\n")


# -- a WebSocket client that costs next to nothing --------------------------------------

def frame(payload: bytes) -> bytes:
    """A masked text frame. The masking key is zero, which the protocol allows and which
    leaves the payload as it is: frames are built once and sent many times."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    return header + b"\0\0\0\0" + payload


# A close frame, code 1000, masked with a zero key.
CLOSE = struct.pack("!BB", 0x88, 0x80 | 2) + b"\0\0\0\0" + struct.pack("!H", 1000)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


async def handshake(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws?site=bench HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Origin: http://{HOST}:{port}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) "
                  "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n\r\n"
                  ).encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode())
    return reader, writer


def batch(port: int, visitor: str, number: int, ack: str | None) -> bytes:
    """Ten messages; the last one is answered with a pop-in."""
    page = f"http://{HOST}:{port}/demo/{('skis', 'wax', 'poles', 'boots')[number % 4]}.html"
    messages: list[dict[str, Any]] = [
        {"type": "popin", "id": ack, "status": "clicked"} if ack else
        {"type": "typing", "active": False},
        {"type": "pageview", "url": f"{page}?n={number}", "title": "A product"},
        {"type": "dwell", "keyword": "waxing", "seconds": 1},
        {"type": "scroll", "percent": 30},
        {"type": "event", "name": "video_played", "props": {"video": "wax-101"}},
        {"type": "dwell", "keyword": "waxing", "seconds": 2},
        {"type": "idle", "seconds": 3},
        {"type": "event", "name": "filter_used", "props": {"length": 190}},
        {"type": "scroll", "percent": 60},
        {"type": "event", "name": "bench_ping", "props": {"n": number, "visitor": visitor}},
    ]
    return b"".join(frame(orjson.dumps(message)) for message in messages)


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    visitor: str
    replies: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    errors: int = 0

    async def pump(self) -> None:
        try:
            while True:
                opcode, payload = await read_frame(self.reader)
                if opcode == 8:
                    return
                if opcode == 1:
                    message = orjson.loads(payload)
                    if message.get("type") == "error":
                        self.errors += 1
                    elif message.get("type") == "show":
                        await self.replies.put(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            return


async def open_one(port: int, kind: str, visitor: str) -> Connection:
    reader, writer = await handshake(port)
    hello = {"type": "hello", "visitor": visitor, "session": f"s-{visitor}",
             "url": f"http://{HOST}:{port}/demo/", "language": "fr-FR",
             "timezone": "Europe/Paris"}
    writer.write(frame(orjson.dumps(hello)))
    if kind != "bare":
        opcode, _config = await read_frame(reader)  # popin's answer: what to watch
        assert opcode == 1
    return Connection(reader, writer, visitor)


async def run_worker(port: int, kind: str, first: int, count: int, task: dict[str, Any],
                     results: Any, go: Any, stop: Any) -> None:
    started = time.perf_counter()
    connections: list[Connection] = []
    failures = 0
    # Waves, so that the listen backlog is never the limit.
    for wave in range(first, first + count, 250):
        opened = await asyncio.gather(*[open_one(port, kind, f"bench-visitor-{n:06d}")
                                        for n in range(wave, min(first + count, wave + 250))],
                                      return_exceptions=True)
        for item in opened:
            if isinstance(item, Connection):
                connections.append(item)
            else:
                failures += 1
    open_seconds = time.perf_counter() - started
    pumps = [asyncio.create_task(connection.pump()) for connection in connections]
    results.put({"opened": len(connections), "failed": failures, "seconds": open_seconds})
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    report: dict[str, Any] = {"messages": 0, "latencies": [], "errors": 0, "timeouts": 0}
    if task["mode"] == "load":
        deadline = time.perf_counter() + task["seconds"]
        await asyncio.gather(*[drive(port, connection, deadline, task["interval"], report)
                               for connection in connections])
    report["errors"] = sum(connection.errors for connection in connections)
    results.put(report)
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    for pump in pumps:
        pump.cancel()
    for connection in connections:
        connection.writer.write(CLOSE)
        connection.writer.close()


async def drive(port: int, connection: Connection, deadline: float, interval: float,
                report: dict[str, Any]) -> None:
    """Batches one after the other (interval 0: as fast as answers come), each waiting
    for its pop-in; then acknowledged in the next batch, as the widget does."""
    ack = None
    number = 0
    # Spread the connections' starts so that paced batches do not arrive in one wave.
    if interval:
        await asyncio.sleep(interval * (hash(connection.visitor) % 1000) / 1000)
    next_at = time.perf_counter()
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        connection.writer.write(batch(port, connection.visitor, number, ack))
        try:
            reply = await asyncio.wait_for(connection.replies.get(),
                                           max(0.5, deadline - sent + 5))
        except TimeoutError:
            report["timeouts"] += 1
            return
        report["messages"] += 10
        report["latencies"].append(time.perf_counter() - sent)
        ack = reply.get("id")
        number += 1
        if interval:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


def worker(*args: Any) -> None:
    try:
        import uvloop

        uvloop.run(run_worker(*args))
    except KeyboardInterrupt:
        pass


# -- servers --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def stolen_seconds() -> float:
    """CPU time the hypervisor gave to others while this machine wanted it."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.port = free_port()
        if kind == "bare":
            command = [sys.executable, str(ROOT / "bench" / "bare_server.py"), str(self.port)]
        elif kind == "ceiling":
            command = [sys.executable, str(ROOT / "bench" / "ceiling_server.py"),
                       str(self.port), str(folder / "rules")]
        else:
            config = folder / "popin.toml"
            config.write_text(f'store = "sqlite:///{folder / "popin.db"}"\n'
                              f'rules = "{folder / "rules"}"\n'
                              # Every client is on 127.0.0.1 and each plays many widgets'
                              # worth of traffic: the per-address and per-socket limits
                              # stay on (their cost is measured) with room for that.
                              '[limits]\nconnections_per_address = 1000000\n'
                              'handshakes_per_minute = 100000\nhandshake_burst = 100000\n'
                              'messages_per_second = 1000\nmessage_burst = 10000\n'
                              '[[sites]]\nkey = "bench"\norigins = ["self"]\n'
                              'fatigue = {per_session = 2, per_day = 3}\n')
            command = [sys.executable, "-m", "popin", "--config", str(config), "serve",
                       "--port", str(self.port), "--no-reload", "--log-level", "warning"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        os.sched_setaffinity(self.process.pid, SERVER_CORE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{kind} server did not start")

    def rss(self) -> int:
        return rss_kb(self.process.pid)

    def waited_seconds(self) -> float:
        """Time the server's threads spent ready to run but not running (the kernel's
        run queue; with schedstats off, 0): a tail the server did not make."""
        total = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
        return total / 1e9

    def cpu_seconds(self) -> float:
        """User and system time the server process has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def clients(server: Server, total: int, processes: int, task: dict[str, Any],
            first: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any, list[Any]]:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    go, stop = context.Event(), context.Event()
    share = total // processes
    workers = []
    client_cores = set(range(os.cpu_count() or 1)) - SERVER_CORE or SERVER_CORE
    for index in range(processes):
        process = context.Process(target=worker, args=(
            server.port, server.kind, first + index * share, share, task, results, go, stop))
        process.start()
        os.sched_setaffinity(process.pid, client_cores)
        workers.append(process)
    opened = [results.get(timeout=300) for _ in workers]
    return opened, [], (results, go, stop), workers


def finish(handles: Any, workers: list[Any]) -> list[dict[str, Any]]:
    results, go, stop = handles
    go.set()
    reports = [results.get(timeout=600) for _ in workers]
    stop.set()
    for process in workers:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    return reports


def idle(server: Server, total: int, processes: int) -> dict[str, float]:
    time.sleep(1.0)
    before = server.rss()
    started = time.perf_counter()
    opened, _unused, handles, workers = clients(server, total, processes, {"mode": "idle"})
    seconds = time.perf_counter() - started
    time.sleep(2.0)
    after = server.rss()
    finish(handles, workers)
    count = sum(item["opened"] for item in opened)
    return {"connections": count, "failed": sum(item["failed"] for item in opened),
            "kb_per_connection": (after - before) / max(1, count),
            "opened_per_second": count / seconds}


def load(server: Server, total: int, processes: int, seconds: float,
         interval: float) -> dict[str, float]:
    opened, _unused, handles, workers = clients(server, total, processes, {
        "mode": "load", "seconds": seconds, "interval": interval}, first=100_000)
    started, cpu = time.perf_counter(), server.cpu_seconds()
    waited, stolen = server.waited_seconds(), stolen_seconds()
    reports = finish(handles, workers)
    elapsed = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu
    waited, stolen = server.waited_seconds() - waited, stolen_seconds() - stolen
    latencies = sorted(latency for report in reports for latency in report["latencies"])
    messages = sum(report["messages"] for report in reports)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 100 else [0.0] * 99
    return {"connections": sum(item["opened"] for item in opened),
            "events_per_second": messages / min(elapsed, seconds + 5),
            "p50_ms": quantiles[49] * 1000, "p99_ms": quantiles[98] * 1000,
            "errors": sum(report["errors"] for report in reports),
            "timeouts": sum(report["timeouts"] for report in reports),
            # What the server's core spent per message, and how busy it was: on a machine
            # with few cores the clients may be what limits the bare server's rate.
            "cpu_us_per_event": cpu * 1e6 / max(1, messages),
            "cpu_share": cpu / elapsed,
            # Milliseconds per second of the run: the server waiting for a core that
            # something else held, and the machine's virtual cores held by its host.
            "run_queue_ms_per_s": waited * 1000 / elapsed,
            "steal_ms_per_s": stolen * 1000 / elapsed}


def measure(kind: str, folder: Path, quick: bool) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    processes = 3
    server = Server(kind, folder)
    try:
        figures["idle_1000"] = idle(server, 1000, processes)
    finally:
        server.stop()
    if not quick:
        server = Server(kind, folder)
        try:
            figures["idle_10000"] = idle(server, 10_000, 4)
        finally:
            server.stop()
    seconds = 3.0 if quick else 10.0
    connections = 200 if quick else 1000
    # A fresh server for each phase: nothing of one load lingers into the next.
    server = Server(kind, folder)
    try:
        figures["saturation"] = load(server, connections, processes, seconds, 0.0)
    finally:
        server.stop()
    # Half of that rate, paced: each connection sends a batch every `interval`. A tail
    # is only believed when it holds: three runs (one with --quick), the worst reported.
    interval = connections * 10 / (figures["saturation"]["events_per_second"] / 2)
    runs = []
    for _run in range(1 if quick else 3):
        server = Server(kind, folder)
        try:
            runs.append(load(server, connections, processes, seconds, interval))
        finally:
            server.stop()
    figures["half_load"] = max(runs, key=lambda run: run["p99_ms"])
    figures["half_load"]["p99_runs_ms"] = [run["p99_ms"] for run in runs]
    figures["half_load"]["waits_runs"] = [(run["run_queue_ms_per_s"], run["steal_ms_per_s"])
                                          for run in runs]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="200 connections for 3 s, no 10,000 run: a smoke test")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        make_rules(Path(folder) / "rules")
        for kind in ("bare", "popin"):
            report[kind] = measure(kind, Path(folder), args.quick)
            print(f"{kind}: {json.dumps(report[kind])}", file=sys.stderr)
        # The bare server running popin's session on every message, and nothing else:
        # what the rules cost at best, beside what popin costs in all.
        server = Server("ceiling", Path(folder))
        try:
            report["ceiling"] = {"saturation": load(server, 200 if args.quick else 1000, 3,
                                                    3.0 if args.quick else 10.0, 0.0)}
        finally:
            server.stop()
        engine_json = Path(folder) / "engine.json"
        subprocess.run([sys.executable, str(ROOT / "bench" / "engine.py"), "--json",
                        str(engine_json), "--events", "20000" if args.quick else "100000"],
                       capture_output=True, text=True, timeout=900)
        report["engine"] = json.loads(engine_json.read_text())
    from popin.web.widget import BUILT, size_of

    report["widget"] = {"gzipped": size_of(BUILT.read_text()).gzipped}
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def print_table(report: dict[str, Any]) -> None:
    bare, popin = report["bare"], report["popin"]

    def row(name: str, bare_value: float, popin_value: float, target: str, ok: bool,
            unit: str = "") -> None:
        ratio = popin_value / bare_value if bare_value else float("nan")
        print(f"{name:36} {bare_value:>12,.1f} {popin_value:>12,.1f} {ratio:>7.2f}x  "
              f"{target:18} {'ok' if ok else 'MISSED'} {unit}")

    print(f"{'figure':36} {'bare':>12} {'popin':>12} {'ratio':>8}  {'target':18}")
    sat_b, sat_p = bare["saturation"], popin["saturation"]
    row("events/s at saturation", sat_b["events_per_second"], sat_p["events_per_second"],
        ">= 0.5x", sat_p["events_per_second"] >= 0.5 * sat_b["events_per_second"])
    row("server CPU us per event, saturation", sat_b["cpu_us_per_event"],
        sat_p["cpu_us_per_event"], "<= 2x",
        sat_p["cpu_us_per_event"] <= 2 * sat_b["cpu_us_per_event"])
    row("server core busy (%), saturation", 100 * sat_b["cpu_share"],
        100 * sat_p["cpu_share"], "", True)
    sat_c = report["ceiling"]["saturation"]
    row("ceiling (bare + session): events/s", sat_b["events_per_second"],
        sat_c["events_per_second"], "", True)
    row("ceiling: CPU us per event", sat_b["cpu_us_per_event"], sat_c["cpu_us_per_event"],
        "", True)
    half_b, half_p = bare["half_load"], popin["half_load"]
    row("push latency p50 (ms), half load", half_b["p50_ms"], half_p["p50_ms"], "", True)
    row("push latency p99 (ms), half load", half_b["p99_ms"], half_p["p99_ms"], "< 10 ms",
        half_p["p99_ms"] < 10)
    for size, most in (("idle_1000", 2.0), ("idle_10000", 1.5)):
        if size in popin:
            kb_b, kb_p = bare[size]["kb_per_connection"], popin[size]["kb_per_connection"]
            row(f"KB per idle connection ({size[5:]})", kb_b, kb_p, f"<= {most:g}x",
                kb_p <= most * kb_b)
    if "idle_10000" in popin:
        idle = popin["idle_10000"]
        row("connections held (10,000)", bare["idle_10000"]["connections"],
            idle["connections"], "all, no error",
            idle["connections"] == 10_000 and not idle["failed"])
    row("connections opened per second", bare["idle_1000"]["opened_per_second"],
        popin["idle_1000"]["opened_per_second"], ">= 0.8x",
        popin["idle_1000"]["opened_per_second"] >= 0.8 * bare["idle_1000"]["opened_per_second"])
    cost = report["engine"]["slowdown_10000_vs_10"]
    print(f"{'engine: 10,000 rules cost':36} {cost:>34.2f}x  {'<= 1.5x the 10':18} "
          f"{'ok' if cost <= 1.5 else 'MISSED'}")
    gzipped = report["widget"]["gzipped"]
    print(f"{'widget, gzipped bytes':36} {gzipped:>34,}   {'<= 5,120':18} "
          f"{'ok' if gzipped <= 5120 else 'MISSED'}")
    print("push latency p99 (ms) per half-load run: popin "
          + ", ".join(f"{value:.1f}" for value in half_p["p99_runs_ms"]) + "; bare "
          + ", ".join(f"{value:.1f}" for value in half_b["p99_runs_ms"]))
    # A tail is only the server's own when it did not wait for its core meanwhile.
    print("server waiting for its core / host steal (ms per s) per half-load run: popin "
          + ", ".join(f"{queued:.1f}/{stolen:.1f}" for queued, stolen in half_p["waits_runs"])
          + "; bare "
          + ", ".join(f"{queued:.1f}/{stolen:.1f}" for queued, stolen in half_b["waits_runs"]))
    errors = popin["saturation"]["errors"] + popin["half_load"]["errors"]
    print(f"popin error frames during the loads: {errors}; timeouts: "
          f"{popin['saturation']['timeouts'] + popin['half_load']['timeouts']}")


if __name__ == "__main__":
    sys.exit(main())
