"""The rule index: given an event, the few rules that could possibly match it.

Rules are indexed by the kind of event they wait for (and by keyword, event name or
path), so a rule that cannot match an event costs nothing when that event arrives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .events import Custom, Dwell, Event, PageView
from .rules import Rule
from .triggers import DwellTrigger, PageviewTrigger, first_segment


def _by_priority(rules: Iterable[Rule]) -> list[Rule]:
    ordered = list(rules)
    # Stable: among equal priorities, file order decides.
    ordered.sort(key=lambda rule: -rule.priority)
    return ordered


class RuleSet:
    __slots__ = ("_dwell", "_events", "_exact_paths", "_path_segments", "_paths_elsewhere",
                 "keywords", "rules")

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        exact: defaultdict[str, list[Rule]] = defaultdict(list)
        segments: defaultdict[str, list[Rule]] = defaultdict(list)
        elsewhere: list[Rule] = []
        dwell: defaultdict[str, list[Rule]] = defaultdict(list)
        events: defaultdict[str, list[Rule]] = defaultdict(list)
        for rule in self.rules:
            trigger = rule.trigger
            if isinstance(trigger, PageviewTrigger):
                if trigger.literal is not None:
                    exact[trigger.literal].append(rule)
                elif trigger.first_segment is not None:
                    segments[trigger.first_segment].append(rule)
                else:
                    elsewhere.append(rule)
            elif isinstance(trigger, DwellTrigger):
                dwell[trigger.keyword].append(rule)
            else:
                events[trigger.name].append(rule)
        self._exact_paths = {path: _by_priority(found) for path, found in exact.items()}
        self._path_segments = dict(segments)
        self._paths_elsewhere = elsewhere
        self._dwell = {
            keyword: sorted(found, key=_dwell_seconds) for keyword, found in dwell.items()
        }
        self._events = {name: _by_priority(found) for name, found in events.items()}
        # What the widget must watch: each keyword with the dwell thresholds to report.
        self.keywords: dict[str, list[float]] = {
            keyword: sorted({_dwell_seconds(rule) for rule in found})
            for keyword, found in self._dwell.items()
        }

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, event: Event, previous_seconds: float = 0.0) -> list[Rule]:
        """Rules whose trigger this event satisfies, highest priority first.

        For dwell, `previous_seconds` is what this keyword had reached on the page
        before, so each threshold fires once when it is crossed.
        """
        if isinstance(event, PageView):
            return self._pageview(event.path)
        if isinstance(event, Dwell):
            found = self._dwell.get(event.keyword)
            if not found:
                return []
            return _by_priority(rule for rule in found
                                if previous_seconds < _dwell_seconds(rule) <= event.seconds)
        if isinstance(event, Custom):
            return self._events.get(event.name, [])
        return []

    def _pageview(self, path: str) -> list[Rule]:
        exact = self._exact_paths.get(path, [])
        by_segment = self._path_segments.get(first_segment(path), [])
        if not by_segment and not self._paths_elsewhere:
            return exact
        matched = [rule for rule in (*by_segment, *self._paths_elsewhere)
                   if isinstance(rule.trigger, PageviewTrigger) and rule.trigger.regex.match(path)]
        if not matched:
            return exact
        return _by_priority([*exact, *matched])


def _dwell_seconds(rule: Rule) -> float:
    trigger = rule.trigger
    return trigger.seconds if isinstance(trigger, DwellTrigger) else 0.0


