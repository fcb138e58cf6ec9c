"""Does a campaign work? Its funnel from the daily counters, and its lift: the conversion
rate of visitors it acted for against that of its hold-out (the control group), with an
always-valid 95% confidence interval (`sequential`) and a verdict in plain words.

A rule with `holdout: 10` keeps a stable 10% of visitors out; they are counted as
`held_out` when the rule would have acted. A conversion is credited to the visitor's
last exposure (or hold-out) of the rule within the rule's window, once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .sequential import always_valid

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
        verdict = (f"Not enough data yet: {exposed} exposed and nobody held out so far; a rule "
                   "measures lift with a holdout (holdout: 10).")
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


@dataclass(slots=True)
class Funnel:
    """One rule's counters over a period."""

    rule: str
    counts: dict[str, float] = field(default_factory=dict)
    # day -> metric -> value, for charts
    days: dict[str, dict[str, float]] = field(default_factory=dict)

    def __getitem__(self, metric: str) -> int:
        return int(self.counts.get(metric, 0))

    @property
    def revenue(self) -> float:
        return self.counts.get("revenue", 0.0)

    @property
    def conversion_rate(self) -> float:
        return _rate(self["converted"], self["exposed"])

    @property
    def lift(self) -> Lift:
        return lift(self["exposed"], self["converted"], self["held_out"],
                    self["converted_control"])

    def series(self, metric: str, days: list[str]) -> list[float]:
        return [self.days.get(day, {}).get(metric, 0.0) for day in days]


def funnels(rows: Iterable[StatRow]) -> dict[str, Funnel]:
    found: dict[str, Funnel] = {}
    for day, rule, metric, value in rows:
        funnel = found.get(rule) or found.setdefault(rule, Funnel(rule))
        funnel.counts[metric] = funnel.counts.get(metric, 0.0) + value
        funnel.days.setdefault(day, defaultdict(float))[metric] += value
    return found
