"""Rules reload on file change without dropping a socket; a broken edit keeps the last
good rules live; `popin rules explain` replays a recorded stream."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from conftest import LOOPBACK, ROOT, wait_until
from popin.cli import main
from popin.config import Settings
from popin.core.site import Site
from popin.web.app import create_app

FIRST = "rules:\n  - {id: first, trigger: {event: signup}, popin: {title: First, body: b}}\n"
SECOND = ("rules:\n  - {id: second, trigger: {event: signup}, popin: {title: Second, body: b}}\n"
          "  - {id: reader, trigger: {dwell: {keyword: wax, seconds: 3}}, tag: wax}\n")
BROKEN = "rules:\n  - {id: third, trigger: {event: signup}, popin: {title: Third}}\n"
ORIGIN = {"origin": "http://testserver"}


def test_edit_reloads_without_dropping_the_socket_and_a_broken_edit_keeps_the_last_good(
        tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    campaign = rules / "campaign.yaml"
    campaign.write_text(FIRST)
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=rules,
                        sites={"demo": Site("demo", holdout=0)})  # the pop-in, not a control
    with TestClient(create_app(settings), client=LOOPBACK) as client, \
            client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(orjson.dumps({"type": "hello", "visitor": "visitor-0001",
                                   "session": "session-0001",
                                   "url": "http://testserver/"}).decode())
        assert ws.receive_json()["watch"] == []
        time.sleep(0.3)  # let the watcher settle before the edit

        campaign.write_text(SECOND)
        wait_until(lambda: client.get("/healthz").json()["rules"] == 2)
        ws.send_text('{"type": "event", "name": "signup"}')
        config = ws.receive_json()
        assert config["type"] == "config" and config["watch"][0]["name"] == "wax"
        shown = ws.receive_json()
        assert shown["rule"] == "second"
        ws.send_text(orjson.dumps({"type": "popin", "id": shown["id"],
                                   "status": "dismissed"}).decode())

        campaign.write_text(BROKEN)
        health = wait_until(lambda: (h := client.get("/healthz").json())["rule_errors"] and h)
        assert health["rules"] == 2
        assert f"{campaign}:2:50: 'popin' has no 'body'" in health["rule_errors"][0]
        ws.send_text(orjson.dumps({"type": "dwell", "keyword": "wax", "seconds": 3}).decode())
        ws.send_text("barrier")
        assert ws.receive_json()["code"] == "bad_json"
        metrics = client.get("/metrics").text
        assert 'kind="rules.reload_failed"} 1' in metrics
        assert 'kind="tagged"} 1' in metrics


def test_explain_replays_a_recorded_stream(capsys: pytest.CaptureFixture[str]) -> None:
    events = ROOT / "tests" / "fixtures" / "explain.jsonl"
    assert main(["rules", "explain", str(events), "--rules", str(ROOT / "rules"),
                 "--start", "2026-11-23T10:00:00+01:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    # Why the dwell fired: the element read, and for how long.
    assert "     8.0s  dwell keyword=waxing seconds=5 element=section#waxing > h2" in out
    assert "          waxing-help: SHOWN" in out
    assert "          skis-cross-sell: SHOWN" in out
    assert ("          cart-hesitation-help: the visitor just closed another pop-in: a minute "
            "of quiet") in out
    assert "          cart-exit-intent: the visitor's pop-in budget is spent" in out
    assert "          cart-hesitation-slots: its conditions ('when') do not hold" in out
    assert "line 9: not a JSON object, skipped" in out
    assert "          cart-reminder-next-visit: SHOWN" in out
