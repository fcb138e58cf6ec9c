"""Engine-only throughput: events/s through Session.handle (rule index, conditions,
guards, rendering) with 10, 1,000 and 10,000 rules, of which only a handful can match.

    python bench/engine.py [--events 100000] [--json bench/results/engine.json]

The 10-rule run is the baseline measured in the same run; the figure that matters is
the ratio, since absolute speeds move from machine to machine. Target: the 10,000-rule
run within 1.5x of the 10-rule one.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

from popin.core.rules.campaign import Rule, parse_document
from popin.core.rules.engine import RuleSet
from popin.core.rules.yamlsource import load
from popin.core.session import Session
from popin.core.site import Site
from popin.core.visitor.agent import Agent
from popin.core.visitor.facts import Facts
from popin.core.visitor.profile import Profile
from popin.core.wire.events import Custom, Dwell, Event, Hello, PageView, PopinStatus, Scroll

# The handful that the stream below can match.
MATCHING = """
  - {id: m-page, trigger: {pageview: /shop/skis}, popin: {title: t, body: "{{ page.path }}"}}
  - {id: m-dwell, trigger: {dwell: {keyword: waxing, seconds: 5}}, popin: {title: t, body: b}}
  - {id: m-event, trigger: {event: add_to_cart}, when: {cart_items: {min: 1}},
     popin: {title: t, body: b}, tag: buyers}
  - {id: m-scroll, trigger: {scroll: 50}, when: {visits: {min: 1}}, popin: {title: t, body: b}}
  - {id: m-after, trigger: {after: {event: add_to_cart, without: checkout_started,
     within: 60s}}, popin: {title: t, body: b}}
"""

# Rules that can never match the stream: other pages, keywords, events, thresholds.
FILLERS = [
    "{{id: f{i}, trigger: {{pageview: /section{i}/*}}, popin: {{title: t, body: b}}}}",
    "{{id: f{i}, trigger: {{dwell: {{keyword: topic{i}, seconds: 10}}}}, tag: t{i}}}",
    "{{id: f{i}, trigger: {{event: custom_{i}}}, when: {{visits: {{min: 2}}}}, "
    "popin: {{title: t, body: b}}}}",
    "{{id: f{i}, trigger: {{pageviews: {{url: /catalog{i}/**, count: 3}}}}, tag: t{i}}}",
    "{{id: f{i}, trigger: {{after: {{event: step_{i}, without: done_{i}, within: 5m}}}}, "
    "tag: t{i}}}",
    "{{id: f{i}, trigger: {{scroll: {p}}}, when: {{country: ZZ}}, tag: t{i}}}",
]


def ruleset(count: int) -> RuleSet:
    fillers = [FILLERS[i % len(FILLERS)].format(i=i, p=91 + i % 9)
               for i in range(count - 5)]
    text = "rules:" + MATCHING + "".join(f"\n  - {line}" for line in fillers)
    rules: list[Rule] = parse_document(load(text, "bench.yaml"), "bench.yaml")
    assert len(rules) == count
    return RuleSet(rules)


def stream() -> list[Event]:
    url = "https://shop.example"
    return [
        PageView(f"{url}/shop/skis", "/shop/skis", "Skis"),
        Dwell("waxing", 5.0),
        Scroll(25),
        Scroll(50),
        Custom("add_to_cart", {"sku": "skis", "price": 289}),
        PopinStatus("unknown.1", "shown"),
        PageView(f"{url}/shop/wax", "/shop/wax", "Wax"),
        Dwell("waxing", 10.0),
        Custom("view_item", {"sku": "wax"}),
        Custom("checkout_started", {}),
    ]


def run(rules: RuleSet, events: int) -> float:
    """events/s over `events` events, a new session every stream (a visitor's visit)."""
    sequence = stream()
    site = Site("bench", fatigue_per_session=99, fatigue_per_day=999)
    done = 0
    started = time.perf_counter()
    visitor = 0
    while done < events:
        visitor += 1
        profile = Profile(f"visitor-{visitor:08d}")
        session = Session("bench", f"session-{visitor:08d}", profile,
                          Facts(profile, site, Agent("desktop")))
        now = 1.8e9 + visitor
        session.begin(Hello(profile.visitor, session.id, "https://shop.example/"), rules, now)
        for event in sequence:
            session.handle(event, rules, now)
            now += 1.0
        done += len(sequence)
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sizes = (10, 1_000, 10_000)
    sets = {size: ruleset(size) for size in sizes}
    best = dict.fromkeys(sizes, 0.0)
    gc.collect()
    # Interleave the sizes so machine noise hits them alike.
    for _ in range(args.repeat):
        for size in sizes:
            best[size] = max(best[size], run(sets[size], args.events))
    baseline = best[10]
    print(f"{'rules':>8} {'events/s':>12} {'vs 10 rules':>12}")
    for size in sizes:
        print(f"{size:>8,} {best[size]:>12,.0f} {baseline / best[size]:>11.2f}x")
    slowdown = baseline / best[10_000]
    verdict = "within" if slowdown <= 1.5 else "OVER"
    print(f"10,000 rules cost {slowdown:.2f}x the 10-rule run: {verdict} the 1.5x target")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"events_per_second": best,
                                         "slowdown_10000_vs_10": slowdown}, indent=2))
    return 0 if slowdown <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
