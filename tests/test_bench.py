"""The benchmarks keep running (their figures are read by people, never asserted here)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_engine_benchmark_runs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "engine.py"), "--events", "300",
                             "--repeat", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines()[1:4]]
    assert rows == ["10", "1,000", "10,000"]
    assert "10,000 rules cost" in result.stdout


def test_audience_benchmark_runs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "audiences.py"),
                             "--sizes", "500,2000"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names[:6] == ["baseline", "csv", "jsonl", "meta", "google", "ids"]


def test_socket_benchmark_runs_against_both_servers() -> None:
    """The load generator, the bare baseline and popin, in a short run: every figure is
    printed and no socket saw an error frame or waited in vain."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "sockets.py"), "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    figures = [line[:36].strip() for line in lines[1:]]
    assert figures[:10] == ["events/s at saturation", "server CPU us per event, saturation",
                           "server core busy (%), saturation",
                           "ceiling (bare + session): events/s", "ceiling: CPU us per event",
                           "push latency p50 (ms), half load",
                           "push latency p99 (ms), half load", "KB per idle connection (1000)",
                           "connections opened per second", "engine: 10,000 rules cost"]
    assert lines[-1] == "popin error frames during the loads: 0; timeouts: 0"


def test_scale_benchmark_runs_on_redis_with_one_and_two_workers() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--quick"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = [line[:40].strip() for line in result.stdout.splitlines()[1:]]
    assert figures == ["sockets", "seconds", "embedded, 1 process: events/s",
                       "redis, 1 worker(s): events/s", "redis, 1 worker(s): commands/event",
                       "redis, 2 worker(s): events/s", "redis, 2 worker(s): commands/event",
                       "cross-node push p50 (ms)", "cross-node push p99 (ms)"]
