"""The always-valid lift test (mSPRT): hand-worked numbers, and by simulation, that
reading it after every 100 visitors of a campaign that does nothing rarely finds a
winner, where the fixed-sample interval read the same way often does."""

from __future__ import annotations

import math
import sys

import pytest

from conftest import ROOT
from popin.features.sequential import ALPHA, TAU, always_valid

sys.path.insert(0, str(ROOT / "bench"))
from peeking import false_harms, false_winners


def test_hand_worked_numbers() -> None:
    # 1,000 exposed with 100 conversions (10 %), 1,000 held out with 50 (5 %).
    found = always_valid(1000, 100, 1000, 50)
    pooled = 150 / 2000
    null = pooled * (1 - pooled) * (1 / 1000 + 1 / 1000)          # 6.9375e-05
    tau2 = TAU * TAU
    evidence = math.sqrt(null / (null + tau2)) * math.exp(
        tau2 * 0.05 ** 2 / (2 * null * (null + tau2)))
    assert found.difference == pytest.approx(0.05)
    assert found.evidence == pytest.approx(evidence, rel=1e-9)
    assert found.evidence > 1 / ALPHA and found.decided
    variance = 0.1 * 0.9 / 1000 + 0.05 * 0.95 / 1000
    radius = math.sqrt(variance * (variance + tau2) / tau2
                       * (2 * math.log(1 / ALPHA) + math.log((variance + tau2) / variance)))
    assert (found.low, found.high) == pytest.approx((0.05 - radius, 0.05 + radius))
    assert found.low > 0, "decided, and the interval says which way"


def test_no_verdict_on_no_effect_or_no_data() -> None:
    assert not always_valid(5000, 250, 500, 25).decided
    empty = always_valid(0, 0, 0, 0)
    assert not empty.decided and empty.low == -math.inf
    hurts = always_valid(2000, 40, 2000, 120)
    assert hurts.decided and hurts.high < 0


def test_its_interval_is_wider_than_the_fixed_sample_one() -> None:
    """The price of reading it every day: a wider interval than one reading would need."""
    found = always_valid(1000, 100, 1000, 50)
    wald = 1.96 * math.sqrt(0.1 * 0.9 / 1000 + 0.05 * 0.95 / 1000)
    assert found.high - found.low > 2 * wald


def test_peeking_finds_few_false_winners() -> None:
    wald, sequential = false_winners(runs=300, seed=7)
    print(f"\nA/A, read every 100 visitors up to 10,000: fixed-sample Wald {wald:.1%}, "
          f"mSPRT {sequential:.1%}")
    assert sequential <= 0.07, f"mSPRT found a false winner in {sequential:.1%} of runs"
    assert wald >= 0.25, f"the fixed-sample test should do far worse, found {wald:.1%}"


def test_rare_conversions_in_a_small_control_group_rarely_pause() -> None:
    """The guard pauses on "it hurts": with the default 5 % holdout and 1 % conversion the
    skewed difference must not make that a frequent false alarm (one side of a 5 % test
    is 2.5 %)."""
    harms = false_harms(runs=150, seed=3)
    print(f"\nA/A, 1 % conversion, 5 % held out, read every 100 visitors up to 20,000: "
          f"'it hurts' in {harms:.1%} of runs")
    assert harms <= 0.03, harms
