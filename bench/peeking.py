"""Owners look at lift every day: how often does each test declare a winner when the
campaign does nothing at all? Simulated A/A runs of 10,000 visitors (90 % exposed, 10 %
held out, both converting at 5 %), read after every 100 visitors; a run "finds a winner"
if any reading is decided. The fixed-sample Wald interval (what a dashboard reading
once would use) against the always-valid mSPRT (popin.features.sequential).

A second case is what a small site sees with the default control group: conversions at
1 %, 5 % held out, 20,000 visitors; rare conversions in a small group make the difference
skewed, and a test may then call "it hurts" (which pauses a campaign) more often than it
should.

    python bench/peeking.py [--runs 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator

from popin.features.lift import MIN_GROUP, lift
from popin.features.sequential import always_valid

Counts = tuple[int, int, int, int]  # exposed, exposed converted, control, control converted


def readings(chooser: random.Random, visitors: int, every: int, rate: float,
             holdout: float) -> Iterator[Counts]:
    """One A/A run: both groups convert at `rate`; the counts after every `every` visitors."""
    exposed = exposed_converted = control = control_converted = 0
    for _ in range(visitors // every):
        for _ in range(every):
            converted = chooser.random() < rate
            if chooser.random() < holdout:
                control += 1
                control_converted += converted
            else:
                exposed += 1
                exposed_converted += converted
        yield exposed, exposed_converted, control, control_converted


def false_winners(runs: int, seed: int, visitors: int = 10_000, every: int = 100,
                  rate: float = 0.05, holdout: float = 0.10) -> tuple[float, float]:
    """Share of A/A runs in which the Wald test, and the mSPRT, ever declared a winner."""
    chooser = random.Random(seed)
    wald_found = sequential_found = 0
    for _ in range(runs):
        wald = sequential = False
        for counts in readings(chooser, visitors, every, rate, holdout):
            found = lift(*counts)
            wald = wald or (min(counts[0], counts[2]) >= MIN_GROUP
                            and (found.wald_low > 0 or found.wald_high < 0))
            sequential = sequential or always_valid(*counts).decided
        wald_found += wald
        sequential_found += sequential
    return wald_found / runs, sequential_found / runs


def false_harms(runs: int, seed: int, visitors: int = 20_000, every: int = 100,
                rate: float = 0.01, holdout: float = 0.05) -> float:
    """Share of A/A runs in which the always-valid test ever said "it hurts"."""
    chooser = random.Random(seed)
    found = 0
    for _ in range(runs):
        for counts in readings(chooser, visitors, every, rate, holdout):
            reading = lift(*counts)
            if reading.decided and reading.difference < 0:
                found += 1
                break
    return found / runs


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--runs", type=int, default=2000)
    options.add_argument("--seed", type=int, default=1)
    args = options.parse_args()
    started = time.perf_counter()
    wald, sequential = false_winners(args.runs, args.seed)
    print(f"A/A runs: {args.runs}, 10,000 visitors each, read every 100 visitors")
    print(f"  fixed-sample Wald 95% interval: a false winner in {wald:6.1%} of runs")
    print(f"  always-valid mSPRT (alpha 5%):  a false winner in {sequential:6.1%} of runs "
          f"(target: at most about 5%)")
    print(f"  ratio: {wald / max(sequential, 1 / args.runs):.1f}x fewer false winners")
    harms = false_harms(args.runs // 4, args.seed)
    print(f"A/A runs: {args.runs // 4}, 20,000 visitors, 1 % conversion, 5 % held out: "
          f"'it hurts' (a pause) in {harms:.1%} of runs (target: at most 2.5 %) "
          f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
