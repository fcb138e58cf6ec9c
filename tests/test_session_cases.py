"""Session behaviour as data: each file in cases/session/ is rules plus a script of
messages and what must come out. The messages go through the real protocol decoder
and the real Session, with no sockets and no store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from popin.core.rules.campaign import Loaded, load_rules, parse_document, parse_shared
from popin.core.rules.engine import RuleSet
from popin.core.rules.yamlsource import load
from popin.core.session import Result, Session
from popin.core.site import DEFAULT_HOLDOUT, DEFAULT_MAX_PAGE_REVENUE, Site
from popin.core.visitor.agent import Agent, Place
from popin.core.visitor.facts import Facts, landing_facts
from popin.core.visitor.profile import Profile
from popin.core.wire.events import Custom, Hello, PopinStatus
from popin.core.wire.protocol import decode, encode

CASES = sorted((Path(__file__).parent / "cases" / "session").glob("*.yaml"))
PLAYBOOK_CASES = sorted((Path(__file__).parent / "cases" / "playbook").glob("*.yaml"))
SHIPPED_RULES = Path(__file__).resolve().parent.parent / "rules"
URL = "https://shop.test"


# Cases run on a Monday morning in Paris unless they say otherwise (`start:`).
DEFAULT_START = "2026-11-23T10:00:00+01:00"


class Replay:
    def __init__(self, case: dict[str, Any]) -> None:
        text = case["rules"]
        if text == "shipped":
            loaded = load_rules(SHIPPED_RULES)
            assert loaded.errors == []
            self.rules = RuleSet(loaded.rules, loaded.keywords, loaded.catalog)
            # The shipped playbook runs with the real default budget.
            site = Site("demo", holdout=case.get("site_holdout", DEFAULT_HOLDOUT))
        else:
            self.rules = RuleSet(parse_document(load(text, "case-rules"), "case-rules"),
                                 *_shared(text))
            # A generous fatigue budget unless the case is about it.
            budget = case.get("fatigue", {"per_session": 99, "per_day": 99})
            site = Site("site", fatigue_per_session=budget["per_session"],
                        fatigue_per_day=budget["per_day"],
                        consent=case.get("consent_mode", "implied"),
                        # No control group unless the case is about one: each case has
                        # one visitor, who would be in it for some rules and not others.
                        holdout=case.get("site_holdout", 0.0),
                        max_page_revenue=case.get("site_max_page_revenue",
                                                  DEFAULT_MAX_PAGE_REVENUE))
        self.profile = Profile(visitor="visitor-0001", **case.get("visitor", {}))
        agent = case.get("agent", {})
        self.hello = Hello(visitor="visitor-0001", session="session-0000",
                           url=case.get("landing", URL + "/"),
                           referrer=case.get("referrer", ""),
                           language=case.get("language", "en-GB"), gpc=case.get("gpc", False),
                           consent=case.get("consent", "unknown"), cmp=case.get("cmp", False))
        utm, referrer = landing_facts(self.hello.url, self.hello.referrer)
        self.facts = Facts(self.profile, site,
                           Agent(agent.get("device", case.get("device", "desktop")),
                                 agent.get("browser", "Chrome"), agent.get("os", "Linux")),
                           Place(**case.get("place", {})), self.hello.language, utm, referrer,
                           consent=self.hello.consent, gpc=self.hello.gpc)
        # Rules the campaign guard paused on this site.
        self.facts.paused.update(case.get("paused", []))
        self.start = datetime.fromisoformat(case.get("start", DEFAULT_START)).timestamp()
        self.visit = 0
        self.last_push = ""
        self.session = self.new_visit(0.0)

    def new_visit(self, at: float) -> Session:
        self.visit += 1
        session_id = f"session-{self.visit:04d}"
        self.session = Session("site", session_id, self.profile, self.facts)
        # As the hub does: a page with a consent tool waits for its signal.
        self.facts.awaiting = self.hello.cmp
        hello = Hello(**{**{name: getattr(self.hello, name) for name in Hello.__slots__},
                         "session": session_id})
        self.session.begin(hello, self.rules, self.start + at)
        return self.session

    def send(self, message: dict[str, Any], at: float) -> Result:
        message = {key: (self.last_push if value == "$last" else value)
                   for key, value in message.items()}
        if message.get("url", "").startswith("/"):
            message["url"] = URL + message["url"]
        event = decode(encode(message))
        assert not isinstance(event, Hello)
        return self.remember(self.session.handle(event, self.rules, self.start + at))

    def backend(self, message: dict[str, Any], at: float) -> Result:
        """An event the site's backend posted with its API key, as the hub hands it on."""
        event = Custom(message["name"], message.get("props", {}), confirmed=True)
        return self.remember(self.session.handle(event, self.rules, self.start + at))

    def tick(self, at: float) -> Result:
        return self.remember(self.session.tick(self.rules, self.start + at))

    def remember(self, result: Result) -> Result:
        for pushed in result.messages:
            if pushed["type"] == "show":
                self.last_push = pushed["id"]
        return result


def _shared(text: str) -> tuple[dict[str, tuple[str, ...]], dict[str, Any]]:
    loaded = Loaded()
    parse_shared(load(text, "case-rules"), "case-rules", loaded)
    return loaded.keywords, loaded.catalog


@pytest.mark.parametrize("path", CASES, ids=[case.stem for case in CASES])
def test_session_case(path: Path) -> None:
    replay_case(path)


@pytest.mark.parametrize("path", PLAYBOOK_CASES, ids=[case.stem for case in PLAYBOOK_CASES])
def test_playbook_case(path: Path) -> None:
    """Each scenario of PRODUCT.md, replayed against the shipped rules/ folder."""
    replay_case(path)


def test_every_playbook_campaign_has_a_replayed_case() -> None:
    campaigns = {path.stem for path in SHIPPED_RULES.glob("*.yaml")} - {"catalog"}
    replayed = {yaml.safe_load(path.read_text())["campaign"] for path in PLAYBOOK_CASES}
    assert campaigns <= replayed, f"no replay case for {sorted(campaigns - replayed)}"


def replay_case(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    replay = Replay(case)
    for number, step in enumerate(case["steps"], 1):
        where = f"{path.name} step {number}"
        at = float(step.get("at", 0))
        if step.get("new_visit"):
            replay.new_visit(at)
        if "send" in step:
            result = replay.send(step["send"], at)
        elif "backend" in step:
            result = replay.backend(step["backend"], at)
        elif step.get("tick"):
            assert replay.session.next_deadline() is not None, f"{where}: no timer is set"
            result = replay.tick(at)
        else:
            if "timers" in step:
                assert sorted(replay.session.timers) == step["timers"], where
            continue
        shown = [message["rule"] for message in result.messages if message["type"] == "show"]
        assert shown == step.get("expect", []), f"{where}: {result.trace}"
        for name in step.get("counts", []):
            assert name in result.counts, f"{where}: {name} not in {result.counts}"
        for text in step.get("html_contains", []):
            assert any(text in message["html"] for message in result.messages), where
        for text in step.get("html_lacks", []):
            assert all(text not in message["html"] for message in result.messages), where
        for rule, outcome in step.get("trace", {}).items():
            assert (rule, outcome) in result.trace, f"{where}: {result.trace}"
        if "webhooks" in step:
            assert [call.url for call in result.effects] == step["webhooks"], where
        if "timers" in step:
            assert sorted(replay.session.timers) == step["timers"], where
        if "stats" in step:
            got = [f"{rule} {metric} {amount:g}" for rule, metric, amount in result.stats]
            assert got == step["stats"], f"{where}: {got}"
        if "taggings" in step:
            assert [audience for audience, _until in result.taggings] == step["taggings"], where
        if "leave_audiences" in step:
            assert result.leave_audiences == step["leave_audiences"], where
        if "remember" in step:
            verdicts = [m["remember"] for m in result.messages if m["type"] == "consent"]
            assert verdicts == [step["remember"]], f"{where}: {verdicts}"
        if "kind" in step:
            assert [m["kind"] for m in result.messages] == [step["kind"]], where
        for key, value in step.get("show", {}).items():
            # Fields of the one pop-in pushed (variant, delay, ...): absent reads as None.
            assert [m.get(key) for m in result.messages if m["type"] == "show"] == [value], \
                f"{where}: {key}"
        if "placement" in step:
            assert [m["placement"] for m in result.messages] == [step["placement"]], where
    expected = case.get("profile", {})
    for key, value in expected.items():
        actual = getattr(replay.profile, key)
        if key == "audiences":
            actual = sorted(actual)
        elif key == "cart":
            actual = {sku: line.quantity for sku, line in actual.items()}
        assert actual == value, f"{path.name}: profile.{key}"


def test_cases_exist() -> None:
    assert len(CASES) >= 10


def test_status_for_push_of_another_session_is_ignored() -> None:
    rule = "rules:\n- {id: r, trigger: {event: go}, popin: {title: T, body: B}}"
    replay = Replay({"rules": rule, "steps": []})
    replay.send({"type": "event", "name": "go"}, 0)
    other = Session("site", "session-other", replay.profile, replay.facts)
    result = other.handle(PopinStatus(push_id=replay.last_push, status="dismissed"),
                          replay.rules, 1)
    assert result.counts == ["status.unknown_push"]
    assert replay.profile.popins["r"].dismissed is None


def test_only_the_backend_confirms_revenue_and_its_figure_is_not_held_to_the_page_cap(
        ) -> None:
    rule = ("rules:\n- {id: offer, trigger: {event: go}, popin: {title: T, body: B},\n"
            "   conversion: {event: order_placed, within: 1h, value: total}}")
    replay = Replay({"rules": rule, "steps": [], "site_max_page_revenue": 100})
    replay.send({"type": "event", "name": "go"}, 0)
    # What the hub makes of an order the site's backend posted with its API key.
    result = replay.session.handle(Custom("order_placed", {"total": 2500.0}, confirmed=True),
                                   replay.rules, replay.start + 1)
    assert result.stats == [("offer", "converted", 1.0), ("offer", "converted_confirmed", 1.0),
                            ("offer", "revenue", 2500.0),
                            ("offer", "revenue_confirmed", 2500.0)]
