"""Appointment slots from a calendar's opening hours, without I/O.

Opening hours are wall-clock times in the calendar's time zone; slots are real
intervals (UTC), so a day when the clocks change has the slots its hours really hold,
and a visitor in another zone sees each slot at their own local time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# minutes since midnight, [start, end)
Spans = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Calendar:
    name: str
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Paris"))
    hours: dict[str, Spans] = field(default_factory=dict)
    # Days off, and days with hours of their own (a late opening, a short Saturday).
    closed: frozenset[date] = frozenset()
    special: dict[date, Spans] = field(default_factory=dict)
    slot_minutes: int = 30
    buffer_minutes: int = 0
    min_notice_minutes: int = 120
    horizon_days: int = 14
    # Agents per slot: that many bookings of one slot, never more.
    capacity: int = 1
    channels: tuple[str, ...] = ("phone", "video")
    # Online bookings one visitor may make per day (the calendar's day); 0: no cap. Keeps
    # one visitor from holding every slot.
    bookings_per_visitor_day: int = 2
    # And from one client address (offices and mobile carriers share one): 0, no cap.
    bookings_per_address_day: int = 6

    def spans_on(self, day: date) -> Spans:
        if day in self.special:
            return self.special[day]
        if day in self.closed:
            return ()
        return self.hours.get(WEEKDAYS[day.weekday()], ())


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    start: float  # epoch seconds (UTC)
    end: float

    def local(self, zone: ZoneInfo) -> datetime:
        return datetime.fromtimestamp(self.start, zone)


def _instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """The real instant of a wall-clock time ("24:00" is the next midnight); a time the
    clocks skip is read with the offset in force before the change (02:30 on a
    spring-forward night is 03:30)."""
    extra_days, minute = divmod(minute, 24 * 60)
    wall = datetime.combine(day + timedelta(days=extra_days), time(minute // 60, minute % 60),
                            tzinfo=zone)
    return wall.astimezone(UTC)


def slots(calendar: Calendar, now: float) -> list[Slot]:
    """Every slot from `now` plus the minimum notice to the end of the horizon."""
    earliest = now + calendar.min_notice_minutes * 60
    today = datetime.fromtimestamp(now, calendar.zone).date()
    step = (calendar.slot_minutes + calendar.buffer_minutes) * 60
    length = calendar.slot_minutes * 60
    found: list[Slot] = []
    for offset in range(calendar.horizon_days + 1):
        day = today + timedelta(days=offset)
        for start_minute, end_minute in calendar.spans_on(day):
            start = _instant(day, start_minute, calendar.zone).timestamp()
            end = _instant(day, end_minute, calendar.zone).timestamp()
            moment = start
            while moment + length <= end:
                if moment >= earliest:
                    found.append(Slot(moment, moment + length))
                moment += step
    return found


def free_slots(calendar: Calendar, now: float, taken: dict[float, int],
               limit: int = 12) -> list[Slot]:
    """The next slots not yet booked up to capacity."""
    return [slot for slot in slots(calendar, now)
            if taken.get(slot.start, 0) < calendar.capacity][:limit]


def by_day(found: list[Slot], zone: ZoneInfo) -> list[tuple[date, list[Slot]]]:
    """Slots grouped by the visitor's own calendar day."""
    days: dict[date, list[Slot]] = {}
    for slot in found:
        days.setdefault(slot.local(zone).date(), []).append(slot)
    return list(days.items())


def visitor_zone(name: str, fallback: ZoneInfo) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else fallback
    except (ValueError, KeyError):
        return fallback
