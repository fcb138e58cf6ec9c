"""The rule index: rules that cannot match an event are never looked at."""

from __future__ import annotations

from popin.core.rules.campaign import Rule, parse_document
from popin.core.rules.conditions import Facts
from popin.core.rules.engine import RuleSet
from popin.core.rules.yamlsource import load
from popin.core.visitor.profile import Profile
from popin.core.wire.events import Custom, Dwell, PageView, PopinStatus


def rules_from(text: str) -> list[Rule]:
    return parse_document(load(text, "t.yaml"), "t.yaml")


def many_rules(count: int) -> str:
    lines = ["rules:"]
    for i in range(count):
        trigger = [f"{{event: e{i}}}", f"{{dwell: {{keyword: k{i}, seconds: 3}}}}",
                   f"{{pageview: /section{i}/*}}"][i % 3]
        lines.append(f"  - {{id: r{i}, trigger: {trigger}, popin: {{title: t, body: b}}}}")
    return "\n".join(lines)


def test_candidates_come_from_the_index_only() -> None:
    ruleset = RuleSet(rules_from(many_rules(300)))
    assert [r.id for r in ruleset.candidates(Custom("e0"))] == ["r0"]
    assert [r.id for r in ruleset.candidates(Dwell("k1", 3))] == ["r1"]
    assert [r.id for r in ruleset.candidates(PageView("u", "/section2/x"))] == ["r2"]
    assert ruleset.candidates(Custom("nobody-listens")) == []
    assert ruleset.candidates(PageView("u", "/elsewhere/x")) == []
    assert ruleset.candidates(PopinStatus("p", "shown")) == []


def test_conditions_of_other_rules_are_never_evaluated() -> None:
    evaluated: list[str] = []

    def spy(rule: Rule) -> Rule:
        def condition(_facts: Facts) -> bool:
            evaluated.append(rule.id)
            return True
        return Rule(**{**{name: getattr(rule, name) for name in Rule.__slots__},
                       "condition": condition})

    ruleset = RuleSet([spy(rule) for rule in rules_from(many_rules(90))])
    for rule in ruleset.candidates(Custom("e3")):
        rule.condition(Facts(Profile("visitor-0001")))
    assert evaluated == ["r3"]


def test_dwell_thresholds_fire_when_crossed() -> None:
    ruleset = RuleSet(rules_from(
        "rules:\n"
        "  - {id: five, trigger: {dwell: {keyword: wax, seconds: 5}}, popin: {title: t, body: b}}\n"
        "  - {id: ten, trigger: {dwell: {keyword: wax, seconds: 10}}, priority: 1,\n"
        "     popin: {title: t, body: b}}\n"))
    assert ruleset.widget_config["watch"] == [
        {"name": "wax", "words": ["wax"], "selector": "", "seconds": [5.0, 10.0]}]
    assert [r.id for r in ruleset.candidates(Dwell("wax", 5), 0)] == ["five"]
    assert [r.id for r in ruleset.candidates(Dwell("wax", 10), 5)] == ["ten"]
    assert [r.id for r in ruleset.candidates(Dwell("wax", 10), 0)] == ["ten", "five"]
    assert ruleset.candidates(Dwell("wax", 10), 10) == []


def test_wildcard_first_segment_and_exact_paths() -> None:
    ruleset = RuleSet(rules_from(
        "rules:\n"
        "  - {id: any, trigger: {pageview: '/*/checkout'}, popin: {title: t, body: b}}\n"
        "  - {id: home, trigger: {pageview: /}, popin: {title: t, body: b}}\n"
        "  - {id: deep, trigger: {pageview: '/shop/**'}, priority: 3,\n"
        "     popin: {title: t, body: b}}\n"))
    assert [r.id for r in ruleset.candidates(PageView("u", "/"))] == ["home"]
    assert [r.id for r in ruleset.candidates(PageView("u", "/shop/checkout"))] == ["deep", "any"]
    assert [r.id for r in ruleset.candidates(PageView("u", "/fr/checkout"))] == ["any"]
