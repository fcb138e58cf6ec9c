"""Session behaviour as data: each file in cases/session/ is rules plus a script of
messages and what must come out. The messages go through the real protocol decoder
and the real Session, with no sockets and no store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from popin.agent import Agent
from popin.config import Site
from popin.engine import RuleSet
from popin.events import Hello, PopinStatus
from popin.facts import Facts
from popin.profile import Profile
from popin.protocol import decode, encode
from popin.rules import parse_document
from popin.session import Result, Session
from popin.yamlsource import load

CASES = sorted((Path(__file__).parent / "cases" / "session").glob("*.yaml"))
URL = "https://shop.test"


def hello(session_id: str) -> Hello:
    return Hello(visitor="visitor-0001", session=session_id, url=URL + "/")


class Replay:
    def __init__(self, case: dict[str, Any]) -> None:
        self.rules = RuleSet(parse_document(load(case["rules"], "case-rules"), "case-rules"))
        self.profile = Profile(visitor="visitor-0001")
        # A generous fatigue budget unless the case is about it.
        budget = case.get("fatigue", {"per_session": 99, "per_day": 99})
        site = Site("site", fatigue_per_session=budget["per_session"],
                    fatigue_per_day=budget["per_day"])
        self.facts = Facts(self.profile, site, agent=Agent(case.get("device", "desktop")))
        self.visit = 0
        self.last_push = ""
        self.counts: list[str] = []
        self.session = self.new_visit(0.0)

    def new_visit(self, now: float) -> Session:
        self.visit += 1
        session_id = f"session-{self.visit:04d}"
        self.session = Session("site", session_id, self.profile, self.facts)
        self.session.begin(hello(session_id), self.rules, now)
        return self.session

    def send(self, message: dict[str, Any], now: float) -> Result:
        message = {key: (self.last_push if value == "$last" else value)
                   for key, value in message.items()}
        if message.get("url", "").startswith("/"):
            message["url"] = URL + message["url"]
        event = decode(encode(message))
        assert not isinstance(event, Hello)
        result = self.session.handle(event, self.rules, now)
        for pushed in result.messages:
            self.last_push = pushed["id"]
        return result


@pytest.mark.parametrize("path", CASES, ids=[case.stem for case in CASES])
def test_session_case(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    replay = Replay(case)
    for number, step in enumerate(case["steps"], 1):
        where = f"{path.name} step {number}"
        now = float(step.get("at", 0))
        if step.get("new_visit"):
            replay.new_visit(now)
        if "send" not in step:
            continue
        result = replay.send(step["send"], now)
        shown = [message["rule"] for message in result.messages if message["type"] == "show"]
        assert shown == step.get("expect", []), where
        for name in step.get("counts", []):
            assert name in result.counts, f"{where}: {name} not in {result.counts}"
        for text in step.get("html_contains", []):
            assert any(text in message["html"] for message in result.messages), where
        for text in step.get("html_lacks", []):
            assert all(text not in message["html"] for message in result.messages), where
    for key, value in case.get("profile", {}).items():
        assert getattr(replay.profile, key) == value, f"{path.name}: profile.{key}"


def test_cases_exist() -> None:
    assert len(CASES) >= 10


def test_status_for_push_of_another_session_is_ignored() -> None:
    rule = "rules:\n- {id: r, trigger: {event: go}, popin: {title: T, body: B}}"
    replay = Replay({"rules": rule})
    replay.send({"type": "event", "name": "go"}, 0)
    other = Session("site", "session-other", replay.profile, replay.facts)
    result = other.handle(PopinStatus(push_id=replay.last_push, status="dismissed"),
                          replay.rules, 1)
    assert result.counts == ["status.unknown_push"]
    assert replay.profile.popins["r"].dismissed is None
