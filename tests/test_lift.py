"""Lift against the hold-out, checked with numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from popin.features.lift import MIN_GROUP, funnels, lift


def test_a_clear_win_with_its_interval() -> None:
    # 10% of 1,000 exposed against 5% of 1,000 held out: +5 points, and
    # 1.96 * sqrt(0.1 * 0.9 / 1000 + 0.05 * 0.95 / 1000) = 0.02298 either side.
    # That Wald interval is right for one reading; the verdict and its interval are the
    # always-valid ones (see test_sequential for their hand-worked numbers), wider.
    found = lift(1000, 100, 1000, 50)
    assert (found.exposed_rate, found.control_rate) == (0.1, 0.05)
    assert found.difference == pytest.approx(0.05)
    assert found.wald_low == pytest.approx(0.027018, abs=1e-6)
    assert found.wald_high == pytest.approx(0.072982, abs=1e-6)
    assert found.low < found.wald_low and found.high > found.wald_high
    assert found.decided
    assert found.verdict == ("It works: +5.0 points of conversion with the campaign "
                             "(95% confidence however often you look: +1.4 points to "
                             "+8.6 points).")


def test_a_campaign_that_hurts() -> None:
    found = lift(400, 20, 400, 48)
    assert found.decided and found.high < 0
    assert found.verdict.startswith("It hurts: -7.0 points")


def test_no_verdict_while_the_interval_holds_zero_or_groups_are_small() -> None:
    # 0.02 +/- 1.96 * sqrt(0.11 * 0.89 / 200 + 0.09 * 0.91 / 200) = 0.02 +/- 0.0588
    close = lift(200, 22, 200, 18)
    assert not close.decided and close.low < 0 < close.high
    assert (close.wald_low, close.wald_high) == pytest.approx((-0.038766, 0.078766), abs=1e-6)
    assert close.verdict == ("Not enough data yet: the difference (-7.5 points to "
                             "+11.5 points) may still be zero.")
    small = lift(MIN_GROUP - 1, 20, 50, 1)
    assert not small.decided
    assert small.verdict == (f"Not enough data yet: {MIN_GROUP - 1} exposed and 50 held out "
                             f"so far; at least {MIN_GROUP} of each are needed.")
    none = lift(10, 1, 0, 0)
    assert none.high == math.inf and not none.decided
    assert none.verdict.startswith("Not enough data yet: 10 exposed and nobody held out")


def test_funnels_add_up_days_and_metrics() -> None:
    rows = [("2026-11-23", "wax", "exposed", 3.0), ("2026-11-24", "wax", "exposed", 2.0),
            ("2026-11-24", "wax", "converted", 1.0), ("2026-11-24", "wax", "revenue", 39.0),
            ("2026-11-24", "boots", "held_out", 1.0)]
    found = funnels(rows)
    assert found["wax"]["exposed"] == 5 and found["wax"].conversion_rate == 0.2
    assert found["wax"].revenue == 39.0
    assert found["wax"].series("exposed", ["2026-11-22", "2026-11-23", "2026-11-24"]) == [
        0.0, 3.0, 2.0]
    assert found["boots"].lift.control == 1


def test_revenue_the_backend_confirmed_is_the_summary_once_there_is_any() -> None:
    page_only = funnels([("2026-11-24", "wax", "revenue", 500.0)])["wax"]
    assert (page_only.revenue, page_only.revenue_reported, page_only.revenue_confirmed) == (
        500.0, 500.0, 0.0)
    assert not page_only.revenue_is_confirmed
    # `revenue` counts every conversion's value, `revenue_confirmed` the backend's share.
    both = funnels([("2026-11-24", "wax", "revenue", 580.0),
                    ("2026-11-24", "wax", "revenue_confirmed", 80.0),
                    ("2026-11-24", "wax", "converted_confirmed", 1.0)])["wax"]
    assert (both.revenue, both.revenue_reported, both.revenue_confirmed) == (80.0, 500.0, 80.0)
    # Confirmed conversions without a value still make the backend the one to believe.
    valueless = funnels([("2026-11-24", "wax", "revenue", 500.0),
                         ("2026-11-24", "wax", "converted_confirmed", 1.0)])["wax"]
    assert valueless.revenue_is_confirmed and valueless.revenue == 0.0
