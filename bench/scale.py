"""popin past one process: events/s with 1 and 2 worker processes on Redis (the embedded
store for reference), the latency of a push posted to one process for a socket held by
another, and the Redis commands each event costs on the hot path.

    python bench/scale.py [--quick] [--json bench/results/scale.json]

Everything runs on this machine, on loopback: a private redis-server on a free port (the
machine's shared Redis is never touched), `popin serve` processes started as an operator
starts them, and one client process. Throughput: sockets each send a custom event that a
rule answers with a pop-in, acknowledge it (clicked) and send the next, for a fixed time.
Cross-node latency: a socket on process B, events posted to process A's API, from the
request leaving to the pop-in arriving on the socket. Redis commands per event: the
server's `total_commands_processed` during the throughput run, divided by the events.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import httpx2
import orjson
import redis
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
RULES = """
rules:
  - id: ping
    category: functional
    trigger: {event: bench_ping}
    popin: {title: "Ping", body: "<p>{{ trigger.props.n }}</p>"}
    cap: {per_session: 1000000}
  - id: shipped
    category: transactional
    trigger: {event: shipped}
    popin: {title: "On its way", body: "<p>{{ trigger.props.n }}</p>"}
    cap: {per_session: 1000000}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx2.get(f"{url}/healthz")
            return
        except httpx2.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"popin did not start at {url}") from None
            time.sleep(0.05)


class Setup:
    def __init__(self, folder: Path, store: str) -> None:
        self.folder = folder
        (folder / "rules").mkdir(parents=True)
        (folder / "rules" / "bench.yaml").write_text(RULES)
        self.config = folder / "popin.toml"
        # The per-socket message limit drops a flood unread; a quick run's few sockets each
        # send faster than any widget, so they get the largest burst the limit allows.
        self.config.write_text(f'store = "{store}"\nrules = "rules"\n'
                               '[[sites]]\nkey = "demo"\nholdout = 0\n'
                               '[limits]\nmessages_per_second = 1000\nmessage_burst = 10000\n'
                               'handshake_burst = 100000\n')
        from popin.cli import main

        out = io.StringIO()
        with redirect_stdout(out):
            main(["--config", str(self.config), "keys", "create", "--scope", "events"])
        self.token = next(word for word in out.getvalue().split() if word.startswith("pk_"))
        self.processes: list[subprocess.Popen[bytes]] = []

    def serve(self, workers: int = 1) -> str:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "popin", "--config", str(self.config), "serve", "--port",
             str(port), "--no-reload", "--log-level", "warning",
             *(["--workers", str(workers)] if workers > 1 else [])],
            cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        url = f"http://{HOST}:{port}"
        wait_for(url, process)
        return url

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"popin {process.pid} did not stop in 30 s: killed", file=sys.stderr)
                process.kill()
                process.wait()
        self.processes = []


async def _visitor(url: str, visitor: str, until: float, counts: list[int]) -> None:
    async with connect(f"ws://{url.removeprefix('http://')}/ws?site=demo",
                       origin=url, compression=None) as ws:  # type: ignore[arg-type]
        await ws.send(orjson.dumps({"type": "hello", "visitor": visitor,
                                    "session": f"session-{visitor}", "url": f"{url}/demo/"}))
        await ws.recv()
        number = 0
        while time.monotonic() < until:
            await ws.send(orjson.dumps({"type": "event", "name": "bench_ping",
                                        "props": {"n": number}}))
            shown = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(orjson.dumps({"type": "popin", "id": shown["id"],
                                        "status": "clicked"}))
            counts[0] += 1
            number += 1


def throughput(url: str, sockets: int, seconds: float) -> float:
    counts = [0]

    async def run() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(_visitor(url, f"bench-visitor-{n:05d}", until, counts)
                               for n in range(sockets)))

    started = time.monotonic()
    asyncio.run(run())
    return counts[0] / (time.monotonic() - started)


def cross_node_latency(receiver: str, sender: str, token: str, pushes: int) -> list[float]:
    async def run() -> list[float]:
        latencies = []
        async with connect(f"ws://{receiver.removeprefix('http://')}/ws?site=demo",
                           origin=receiver, compression=None) as ws:  # type: ignore[arg-type]
            await ws.send(orjson.dumps({"type": "hello", "visitor": "bench-far-visitor",
                                        "session": "session-far-0001", "url": f"{receiver}/demo/"}))
            await ws.recv()
            await asyncio.sleep(0.3)
            async with httpx2.AsyncClient() as client:
                for number in range(pushes):
                    started = time.perf_counter()
                    answer = await client.post(
                        f"{sender}/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                        json={"events": [{"name": "shipped", "visitor": "bench-far-visitor",
                                          "props": {"n": number}}]})
                    assert answer.json()["results"][0]["shown_live"] == 1, answer.text
                    shown = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                    latencies.append((time.perf_counter() - started) * 1000)
                    await ws.send(orjson.dumps({"type": "popin", "id": shown["id"],
                                                "status": "clicked"}))
        return latencies

    return asyncio.run(run())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sockets, seconds, pushes = (10, 1.5, 20) if args.quick else (100, 10.0, 300)
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"sockets": sockets, "seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="popin-scale-") as temporary:
        folder = Path(temporary)
        port = free_port()
        server = subprocess.Popen([binary, "--port", str(port), "--bind", HOST, "--save", "",
                                   "--appendonly", "no", "--dir", str(folder)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(host=HOST, port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            embedded = Setup(folder / "embedded", f"sqlite:///{folder / 'embedded.db'}")
            try:
                report["embedded, 1 process: events/s"] = throughput(embedded.serve(),
                                                                      sockets, seconds)
            finally:
                embedded.stop()
            for workers in (1, 2):
                setup = Setup(folder / f"redis-{workers}", f"redis://{HOST}:{port}/0"
                              f"?prefix=scale{workers}")
                try:
                    url = setup.serve(workers)
                    before = int(client.info("stats")["total_commands_processed"])
                    rate = throughput(url, sockets, seconds)
                    commands = int(client.info("stats")["total_commands_processed"]) - before
                    report[f"redis, {workers} worker(s): events/s"] = rate
                    report[f"redis, {workers} worker(s): commands/event"] = (
                        commands / max(1.0, rate * seconds))
                finally:
                    setup.stop()
            setup = Setup(folder / "cross", f"redis://{HOST}:{port}/0?prefix=cross")
            try:
                sender, receiver = setup.serve(), setup.serve()
                latencies = cross_node_latency(receiver, sender, setup.token, pushes)
                report["cross-node push p50 (ms)"] = statistics.median(latencies)
                report["cross-node push p99 (ms)"] = percentile(latencies, 0.99)
            finally:
                setup.stop()
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"{'figure':<40} value")
    for name, value in report.items():
        print(f"{name:<40} {value:,.2f}" if isinstance(value, float) else
              f"{name:<40} {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
