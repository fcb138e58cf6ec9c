"""The rule index: given an event, the few rules that could possibly match it.

Rules are indexed by the kind of event they wait for (and by keyword, event name or
path), so a rule that cannot match an event costs nothing when that event arrives.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..wire.events import (
    Custom,
    Dwell,
    Event,
    ExitIntent,
    Idle,
    PageView,
    Scroll,
    TabReturn,
    Timer,
)
from .campaign import CatalogItem, Rule
from .triggers import (
    AfterTrigger,
    BirthdayTrigger,
    DwellTrigger,
    EventTrigger,
    ExitIntentTrigger,
    IdleTrigger,
    Keywords,
    PageviewTrigger,
    ScrollTrigger,
    SearchTrigger,
    TabReturnTrigger,
    TimeOnPageTrigger,
    VisitTrigger,
    first_segment,
)


def by_priority(rules: Iterable[Rule]) -> list[Rule]:
    # Stable: among equal priorities, file order decides.
    return sorted(rules, key=lambda rule: -rule.priority)


def _threshold(rule: Rule) -> float:
    trigger = rule.trigger
    if isinstance(trigger, DwellTrigger | IdleTrigger | TabReturnTrigger):
        return trigger.seconds
    if isinstance(trigger, ScrollTrigger):
        return trigger.percent
    return 0.0


class Thresholds:
    """Rules sorted by threshold: those crossed between two readings, found by bisection."""

    __slots__ = ("_rules", "_values")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._rules = sorted(rules, key=lambda rule: (_threshold(rule), -rule.priority))
        self._values = [_threshold(rule) for rule in self._rules]

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def crossed(self, previous: float, reached: float) -> list[Rule]:
        """Rules whose threshold lies in (previous, reached], highest priority first."""
        low = bisect_right(self._values, previous)
        high = bisect_right(self._values, reached)
        return by_priority(self._rules[low:high]) if high > low else []


class RuleSet:
    def __init__(self, rules: Iterable[Rule] = (), keywords: Keywords | None = None,
                 catalog: Mapping[str, CatalogItem] | None = None) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.keywords = dict(keywords or {})
        self.catalog = dict(catalog or {})
        self.by_id = {rule.id: rule for rule in self.rules}
        kinds: defaultdict[type, list[Rule]] = defaultdict(list)
        for rule in self.rules:
            kinds[type(rule.trigger)].append(rule)
        exact: defaultdict[str, list[Rule]] = defaultdict(list)
        segments: defaultdict[str, list[Rule]] = defaultdict(list)
        self._paths_elsewhere: list[Rule] = []
        for rule in kinds[PageviewTrigger]:
            assert isinstance(rule.trigger, PageviewTrigger)
            if rule.trigger.literal is not None:
                exact[rule.trigger.literal].append(rule)
            elif rule.trigger.first_segment is not None:
                segments[rule.trigger.first_segment].append(rule)
            else:
                self._paths_elsewhere.append(rule)
        self._exact_paths = {path: by_priority(found) for path, found in exact.items()}
        self._path_segments = dict(segments)
        dwell: defaultdict[str, list[Rule]] = defaultdict(list)
        for rule in kinds[DwellTrigger]:
            assert isinstance(rule.trigger, DwellTrigger)
            dwell[rule.trigger.watch].append(rule)
        self._dwell = {watch: Thresholds(found) for watch, found in dwell.items()}
        self._events = self._grouped(kinds[EventTrigger],
                                     lambda t: t.name if isinstance(t, EventTrigger) else "")
        self.after_start = self._grouped(
            kinds[AfterTrigger], lambda t: t.event if isinstance(t, AfterTrigger) else "")
        cancel: defaultdict[str, list[Rule]] = defaultdict(list)
        for rule in kinds[AfterTrigger]:
            assert isinstance(rule.trigger, AfterTrigger)
            for name in rule.trigger.without:
                cancel[name].append(rule)
        self.after_cancel = dict(cancel)
        self._scroll = Thresholds(kinds[ScrollTrigger])
        self._idle = Thresholds(kinds[IdleTrigger])
        self._tab = Thresholds(kinds[TabReturnTrigger])
        self._exit = by_priority(kinds[ExitIntentTrigger])
        self.search = by_priority(kinds[SearchTrigger])
        self.visit = by_priority([*kinds[VisitTrigger], *kinds[BirthdayTrigger]])
        self.time_on_page = kinds[TimeOnPageTrigger]
        self.widget_config = self._widget_config()
        # event name -> rules that count it as their conversion
        conversions: defaultdict[str, list[Rule]] = defaultdict(list)
        for rule in self.rules:
            if rule.conversion is not None:
                conversions[rule.conversion.event].append(rule)
        self.conversions = dict(conversions)
        # audience -> the longest membership any rule gives it, in days
        self.audience_days: dict[str, int] = {}
        for rule in self.rules:
            for tag in rule.tags:
                self.audience_days[tag.audience] = max(self.audience_days.get(tag.audience, 0),
                                                       tag.days)
        self._dispatch: dict[type, Callable[[Any, float], list[Rule]]] = {
            PageView: lambda event, _previous: self._pageview(event.path),
            Dwell: lambda event, previous: (
                self._dwell[event.keyword].crossed(previous, event.seconds)
                if event.keyword in self._dwell else []),
            Scroll: lambda event, previous: self._scroll.crossed(previous, event.percent),
            Idle: lambda event, previous: self._idle.crossed(previous, event.seconds),
            TabReturn: lambda event, _previous: self._tab.crossed(0, event.seconds),
            ExitIntent: lambda _event, _previous: self._exit,
            Custom: lambda event, _previous: [
                rule for rule in self._events.get(event.name, ())
                if isinstance(rule.trigger, EventTrigger) and rule.trigger.matches(event.props)],
            Timer: lambda event, _previous: ([self.by_id[event.rule]]
                                             if event.rule in self.by_id else []),
        }

    @staticmethod
    def _grouped(rules: list[Rule], key: Callable[[Any], str]) -> dict[str, list[Rule]]:
        groups: defaultdict[str, list[Rule]] = defaultdict(list)
        for rule in rules:
            groups[key(rule.trigger)].append(rule)
        return {name: sorted(found, key=lambda rule: (_threshold(rule), -rule.priority))
                for name, found in groups.items()}

    def _widget_config(self) -> dict[str, Any]:
        """What the widget must measure for these rules, and nothing more."""
        watch = []
        for name, thresholds in self._dwell.items():
            rules = list(thresholds)
            trigger = rules[0].trigger
            assert isinstance(trigger, DwellTrigger)
            watch.append({"name": name, "words": list(trigger.words),
                          "selector": trigger.selector,
                          "seconds": sorted({_threshold(rule) for rule in rules})})
        return {"type": "config", "watch": watch,
                "scroll": sorted({int(_threshold(rule)) for rule in self._scroll}),
                "idle": sorted({_threshold(rule) for rule in self._idle}),
                "tab": min((_threshold(rule) for rule in self._tab), default=0),
                "exit": bool(self._exit)}

    def __len__(self) -> int:
        return len(self.rules)

    def watches(self, keyword: str) -> bool:
        """Is this a dwell the widget was asked to measure (a name from the config)?"""
        return keyword in self._dwell

    def candidates(self, event: Event, previous: float = 0.0) -> list[Rule]:
        """Rules whose trigger this event satisfies, highest priority first.

        For measured events (dwell, scroll, idle), `previous` is what was reached
        before, so each threshold fires once, when it is crossed.
        """
        dispatch = self._dispatch.get(type(event))
        return dispatch(event, previous) if dispatch else []

    def _pageview(self, path: str) -> list[Rule]:
        exact = self._exact_paths.get(path, [])
        by_segment = self._path_segments.get(first_segment(path), [])
        if not by_segment and not self._paths_elsewhere:
            return exact
        matched = [rule for rule in (*by_segment, *self._paths_elsewhere)
                   if isinstance(rule.trigger, PageviewTrigger) and rule.trigger.regex.match(path)]
        return by_priority([*exact, *matched]) if matched else exact
