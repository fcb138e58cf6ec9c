"""The garbage collector of a serving process, tuned for a flat push latency.

With the defaults, a full collection walks every object of the process, rules and
compiled templates included, every few seconds of a busy server: pauses of tens of
milliseconds in the tail of push latency. What start-up made lives as long as the
process, so it is frozen out of the collector's sight; the young generation is made
larger, so that collections come less often and each one stays short.
"""

from __future__ import annotations

import gc

# Allocations between young collections (the default, 700, ran one every few frames).
YOUNG = 20_000
# Young collections per middle one, middle per full one (defaults 10 and 10).
MIDDLE = 20
FULL = 50


def settle_heap() -> None:
    """Once the app has started: collect, freeze what is left, widen the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, FULL)
