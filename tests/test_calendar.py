"""Slots from opening hours, on the days the clocks change in Paris and New York."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from popin.core.calendar import Calendar, by_day, free_slots, slots, visitor_zone

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
EVERY_DAY = {day: ((9 * 60, 12 * 60),) for day in ("mon", "tue", "wed", "thu", "fri", "sat",
                                                    "sun")}


def at(text: str, zone: ZoneInfo) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def local_starts(calendar: Calendar, now: float, day: str, zone: ZoneInfo) -> list[str]:
    return [slot.local(zone).strftime("%H:%M") for slot in slots(calendar, now)
            if slot.local(zone).date().isoformat() == day]


@pytest.mark.parametrize(("zone", "before", "change", "after"), [
    (PARIS, "2026-03-28", "2026-03-29", "2026-03-30"),      # spring forward
    (PARIS, "2026-10-24", "2026-10-25", "2026-10-26"),      # fall back
    (NEW_YORK, "2026-03-07", "2026-03-08", "2026-03-09"),
    (NEW_YORK, "2026-10-31", "2026-11-01", "2026-11-02"),
])
def test_opening_hours_keep_their_wall_clock_across_dst(
        zone: ZoneInfo, before: str, change: str, after: str) -> None:
    calendar = Calendar("team", zone, EVERY_DAY, slot_minutes=30, min_notice_minutes=0)
    now = at(f"{before}T00:00:00", zone)
    expected = ["09:00", "09:30", "10:00", "10:30", "11:00", "11:30"]
    for day in (before, change, after):
        assert local_starts(calendar, now, day, zone) == expected, day
    offsets = {day: datetime.fromisoformat(f"{day}T09:00").replace(tzinfo=zone).utcoffset()
               for day in (before, after)}
    assert offsets[before] != offsets[after], "the fixture days must straddle a change"


def test_a_span_across_the_night_the_clocks_go_back_holds_an_hour_more() -> None:
    night = {"sun": ((0, 4 * 60),)}
    calendar = Calendar("night", PARIS, night, slot_minutes=60, min_notice_minutes=0)
    found = [slot for slot in slots(calendar, at("2026-10-24T12:00:00", PARIS))
             if slot.local(PARIS).date() == date(2026, 10, 25)]
    # 00:00 to 04:00 wall clock is five real hours that night.
    assert [slot.local(PARIS).strftime("%H:%M%z") for slot in found] == [
        "00:00+0200", "01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100"]


def test_a_span_across_the_night_the_clocks_go_forward_holds_an_hour_less() -> None:
    night = {"sun": ((0, 4 * 60),)}
    calendar = Calendar("night", PARIS, night, slot_minutes=60, min_notice_minutes=0)
    found = [slot for slot in slots(calendar, at("2026-03-28T12:00:00", PARIS))
             if slot.local(PARIS).date() == date(2026, 3, 29)]
    assert [slot.local(PARIS).strftime("%H:%M") for slot in found] == ["00:00", "01:00",
                                                                       "03:00"]


def test_a_visitor_sees_slots_in_their_own_zone_grouped_by_their_day() -> None:
    # Between the US change (8 March) and the European one (29 March): 5 hours apart.
    calendar = Calendar("team", PARIS, {"mon": ((9 * 60, 10 * 60),)}, slot_minutes=30,
                        min_notice_minutes=0, horizon_days=7)
    found = slots(calendar, at("2026-03-15T12:00:00", PARIS))
    grouped = by_day(found, NEW_YORK)
    assert [(day.isoformat(), [s.local(NEW_YORK).strftime("%H:%M") for s in day_slots])
            for day, day_slots in grouped] == [("2026-03-16", ["04:00", "04:30"])]
    after = by_day(slots(calendar, at("2026-03-29T12:00:00", PARIS)), NEW_YORK)
    assert [s.local(NEW_YORK).strftime("%H:%M") for s in after[0][1]] == ["03:00", "03:30"]


def test_notice_buffer_horizon_exceptions_and_capacity() -> None:
    calendar = Calendar("team", PARIS, {"mon": ((9 * 60, 11 * 60),), "tue": ((9 * 60, 10 * 60),)},
                        closed=frozenset({date(2026, 11, 24)}),
                        special={date(2026, 12, 1): ((14 * 60, 15 * 60),)},
                        slot_minutes=30, buffer_minutes=15, min_notice_minutes=60,
                        horizon_days=8, capacity=2)
    now = at("2026-11-23T08:30:00", PARIS)  # Monday
    starts = [s.local(PARIS).strftime("%a %d %H:%M") for s in slots(calendar, now)]
    # 9:00 is within the hour of notice; 45-minute steps; Tuesday 24 closed; Tuesday 1
    # December has its special hours.
    assert starts == ["Mon 23 09:45", "Mon 23 10:30", "Mon 30 09:00", "Mon 30 09:45",
                      "Mon 30 10:30", "Tue 01 14:00"]
    first = slots(calendar, now)[0]
    taken = {first.start: 2}
    assert free_slots(calendar, now, taken)[0] != first
    assert free_slots(calendar, now, {first.start: 1})[0] == first


def test_unknown_visitor_zone_falls_back_to_the_calendar() -> None:
    assert visitor_zone("Mars/Olympus", PARIS) is PARIS
    assert visitor_zone("", PARIS) is PARIS
    assert visitor_zone("America/New_York", PARIS) == NEW_YORK
