"""Does a campaign work? Its funnel from the daily counters, and its lift: the conversion
rate of visitors it acted for against that of its hold-out (the control group), with an
always-valid 95% confidence interval (`sequential`) and a verdict in plain words.

Every marketing pop-in keeps a stable few percent of visitors out (the site's `holdout`,
5 by default; a rule's `holdout: 10` overrides it); they are counted as `held_out` when
the rule would have acted. A conversion is credited to the visitor's
last exposure (or hold-out) of the rule within the rule's window, once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ..core.rules.variants import split_key
from .sequential import always_valid

# What the dashboard shows and the campaign guard judges on.
PERIOD_DAYS = 30
# Below this many visitors in either group, no verdict: the interval would be wild.
MIN_GROUP = 30
Z_95 = 1.959963984540054
FUNNEL = ("triggered", "exposed", "shown", "clicked", "dismissed", "converted")
StatRow = tuple[str, str, str, float]  # day, rule, metric, value


@dataclass(frozen=True, slots=True)
class Lift:
    exposed: int
    exposed_converted: int
    control: int
    control_converted: int
    exposed_rate: float
    control_rate: float
    # Exposed rate minus control rate, and its always-valid 95% interval (fractions).
    difference: float
    low: float
    high: float
    verdict: str
    # Whether the sequential test allows a conclusion.
    decided: bool
    # The fixed-sample Wald 95% interval: valid for one reading, not for daily ones.
    wald_low: float = -math.inf
    wald_high: float = math.inf


def _rate(converted: int, total: int) -> float:
    return converted / total if total else 0.0


def lift(exposed: int, exposed_converted: int, control: int, control_converted: int) -> Lift:
    """Difference of two proportions. The verdict and the interval are always valid (the
    mSPRT of `sequential`: owners read them every day); the Wald 95% interval, right for
    one reading only, is kept as a second figure."""
    p1, p2 = _rate(exposed_converted, exposed), _rate(control_converted, control)
    difference = p1 - p2
    spread = (Z_95 * math.sqrt(p1 * (1 - p1) / exposed + p2 * (1 - p2) / control)
              if exposed and control else math.inf)
    wald_low, wald_high = difference - spread, difference + spread
    tested = always_valid(exposed, exposed_converted, control, control_converted)
    low, high = tested.low, tested.high
    decided = False
    if not control:
        verdict = (f"Not enough data yet: {exposed} exposed and nobody held out so far "
                   "(lift needs a control group: the site's holdout, or the rule's).")
    elif min(exposed, control) < MIN_GROUP:
        verdict = (f"Not enough data yet: {exposed} exposed and {control} held out so far; "
                   f"at least {MIN_GROUP} of each are needed.")
    elif tested.decided:
        decided = True
        direction = "works" if difference > 0 else "hurts"
        verdict = (f"It {direction}: {_points(difference)} of conversion with the campaign "
                   f"(95% confidence however often you look: {_points(low)} to "
                   f"{_points(high)}).")
    else:
        verdict = (f"Not enough data yet: the difference ({_points(low)} to "
                   f"{_points(high)}) may still be zero.")
    return Lift(exposed, exposed_converted, control, control_converted, p1, p2, difference,
                low, high, verdict, decided, wald_low, wald_high)


def _points(fraction: float) -> str:
    return f"{fraction * 100:+.1f} points"


def harmful(result: Lift) -> bool:
    """Does the campaign lower conversions, with the always-valid test's confidence?"""
    return result.decided and result.difference < 0


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two variants of one rule, head to head (same always-valid test as the lift)."""

    first: str
    second: str
    difference: float
    low: float
    high: float
    decided: bool

    @property
    def verdict(self) -> str:
        if not self.decided:
            return (f"{self.first} against {self.second}: no difference shown yet "
                    f"({_points(self.low)} to {_points(self.high)}).")
        better, worse = ((self.first, self.second) if self.difference > 0
                         else (self.second, self.first))
        return (f"{better} converts better than {worse} by {_points(abs(self.difference))} "
                f"({_points(self.low)} to {_points(self.high)}, 95% however often you look).")


@dataclass(slots=True)
class Funnel:
    """One rule's counters over a period (or one variant's: then `variant` is set)."""

    rule: str
    counts: dict[str, float] = field(default_factory=dict)
    # day -> metric -> value, for charts
    days: dict[str, dict[str, float]] = field(default_factory=dict)
    variant: str = ""
    # An experiment's versions, by variant id; their control group is the rule's.
    variants: dict[str, Funnel] = field(default_factory=dict)

    def __getitem__(self, metric: str) -> int:
        return int(self.counts.get(metric, 0))

    @property
    def revenue_confirmed(self) -> float:
        """Revenue the site's backend posted through the API (with its key)."""
        return self.counts.get("revenue_confirmed", 0.0)

    @property
    def revenue_reported(self) -> float:
        """Revenue only pages reported: anyone can script those events, so unverified.
        `revenue` counts both, as `converted` does (never below 0 from rounding)."""
        return max(0.0, self.counts.get("revenue", 0.0) - self.revenue_confirmed)

    @property
    def revenue_is_confirmed(self) -> bool:
        """Does the site's backend confirm this campaign's conversions? Then its word is
        the revenue to go by, and the pages' figures are a side note."""
        return self.revenue_confirmed > 0 or self["converted_confirmed"] > 0

    @property
    def revenue(self) -> float:
        """The one figure for summaries: the backend's when it confirms any conversion."""
        return self.revenue_confirmed if self.revenue_is_confirmed else self.revenue_reported

    @property
    def conversion_rate(self) -> float:
        return _rate(self["converted"], self["exposed"])

    @property
    def lift(self) -> Lift:
        return lift(self["exposed"], self["converted"], self["held_out"],
                    self["converted_control"])

    @property
    def confirmed_lift(self) -> Lift:
        """The lift on conversions the site's backend confirmed (API events) only."""
        return lift(self["exposed"], self["converted_confirmed"], self["held_out"],
                    self["converted_control_confirmed"])

    def series(self, metric: str, days: list[str]) -> list[float]:
        return [self.days.get(day, {}).get(metric, 0.0) for day in days]

    def variant_lift(self, variant: str) -> Lift:
        """One version against the rule's control group."""
        own = self.variants[variant]
        return lift(own["exposed"], own["converted"], self["held_out"],
                    self["converted_control"])

    def comparisons(self) -> list[Comparison]:
        """Every pair of versions, each with the test the lift uses."""
        found = []
        names = sorted(self.variants)
        for index, first in enumerate(names):
            for second in names[index + 1:]:
                a, b = self.variants[first], self.variants[second]
                tested = always_valid(a["exposed"], a["converted"], b["exposed"], b["converted"])
                enough = min(a["exposed"], b["exposed"]) >= MIN_GROUP
                found.append(Comparison(first, second, tested.difference, tested.low,
                                        tested.high, enough and tested.decided))
        return found


def funnels(rows: Iterable[StatRow]) -> dict[str, Funnel]:
    """Rules' funnels from the daily counters; a variant's rows ("rule:variant") go into
    its rule's `variants`."""
    found: dict[str, Funnel] = {}
    for day, key, metric, value in rows:
        rule, variant = split_key(key)
        funnel = found.get(rule) or found.setdefault(rule, Funnel(rule))
        if variant:
            funnel = (funnel.variants.get(variant)
                      or funnel.variants.setdefault(variant, Funnel(rule, variant=variant)))
        funnel.counts[metric] = funnel.counts.get(metric, 0.0) + value
        funnel.days.setdefault(day, defaultdict(float))[metric] += value
    return found


def period(zone: ZoneInfo, now: float, days: int = PERIOD_DAYS) -> list[str]:
    """The last `days` days up to today on the site's calendar, oldest first (ISO)."""
    today = datetime.fromtimestamp(now, zone).date()
    return [(today - timedelta(days=back)).isoformat() for back in range(days - 1, -1, -1)]
