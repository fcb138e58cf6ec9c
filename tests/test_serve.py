"""`popin serve` as a newcomer runs it: a real process, a real port, a real file store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

from conftest import free_port, wait_for_port


def start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "popin", "serve", "--port", str(port), *extra],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wait_for_port(port, timeout=20)
    return process, port


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=20)
    return output


def test_serve_runs_the_demo_on_a_fresh_embedded_store(tmp_path: Path) -> None:
    process, port = start(tmp_path)
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        assert health["ok"] is True and health["rules"] >= 5
        assert httpx.get(f"http://127.0.0.1:{port}/demo/skis.html").status_code == 200
        assert (tmp_path / "popin.db").is_file()
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/demo/" in output


def test_serve_reports_rule_errors_at_start_and_keeps_the_good_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.yaml").write_text(
        "rules:\n  - {id: good, trigger: {event: go}, popin: {title: t, body: b}}\n")
    (rules / "bad.yaml").write_text(
        "rules:\n  - id: bad\n    trigger: {event: go}\n    popin: {title: t, bdy: b}\n")
    process, port = start(tmp_path, "--rules", str(rules), "--store", "sqlite:///s.db")
    try:
        deadline = time.monotonic() + 10
        while httpx.get(f"http://127.0.0.1:{port}/healthz").json()["rules"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        output = stop(process)
    assert (f"{rules / 'bad.yaml'}:4:23: unknown key 'bdy' in 'popin' (did you mean 'body'?)"
            in output)
    assert f"loaded 1 rule from 2 files in {rules}" in output
    assert (tmp_path / "s.db").is_file()


def test_sighup_reloads_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    rule = "rules:\n  - {{id: r{n}, trigger: {{event: signup}}, tag: t}}\n"
    (rules / "a.yaml").write_text(rule.format(n=1))
    process, port = start(tmp_path, "--rules", str(rules), "--no-reload")
    try:
        def count() -> int:
            rules_now: int = httpx.get(f"http://127.0.0.1:{port}/healthz").json()["rules"]
            return rules_now

        assert count() == 1
        (rules / "b.yaml").write_text(rule.format(n=2))
        time.sleep(0.5)
        assert count() == 1, "--no-reload must not watch files"
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while count() != 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        stop(process)
