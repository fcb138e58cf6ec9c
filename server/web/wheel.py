"""One timer for every widget socket of the process: hello and idle limits, session timers.

A timeout around each receive made and cancelled a timer for every frame (a Timeout, a
TimerHandle, the heap under them: about a twentieth of a busy server's time, py-spy
under bench/sockets.py). Here a socket only writes down when it wants waking; a tick
every RESOLUTION seconds wakes those whose time came, by cancelling their receive.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import weakref

# Timers fire up to this late; the shortest limit (hello, 1 s) is far longer.
RESOLUTION = 0.1


class Alarm:
    """One socket's wish to be woken at `deadline` (the loop's clock) while it waits."""

    __slots__ = ("deadline", "rung", "slot", "task", "waiting")

    def __init__(self, task: asyncio.Task[None] | None) -> None:
        # None once the socket closed: nothing is woken, nothing kept alive.
        self.task = task
        self.deadline = math.inf
        # The slot this alarm sits in (0: none); a later slot is found again when it fires.
        self.slot = 0
        self.waiting = False
        self.rung = False

    def woken(self) -> bool:
        """After a CancelledError in the wait: whether it was this alarm, and nothing else
        asked the task to stop (in which case it must go on stopping)."""
        if not self.rung or self.task is None:
            return False
        self.rung = False
        return self.task.uncancel() == 0


class Wheel:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[Alarm]] = {}
        self._order: list[int] = []
        self._ticking: asyncio.TimerHandle | None = None

    def set(self, alarm: Alarm, deadline: float) -> None:
        alarm.deadline = deadline
        if deadline == math.inf:
            return
        # Deadlines mostly move later: the alarm stays in its earlier slot and is put in
        # the right one when that slot comes (a few times per idle period at most).
        slot = math.ceil(deadline / RESOLUTION)
        if not alarm.slot or slot < alarm.slot:
            self._put(alarm, slot)

    def stop(self, alarm: Alarm) -> None:
        alarm.deadline = math.inf
        alarm.task = None

    def _put(self, alarm: Alarm, slot: int) -> None:
        alarm.slot = slot
        found = self._slots.get(slot)
        if found is None:
            found = self._slots[slot] = []
            heapq.heappush(self._order, slot)
        found.append(alarm)
        if self._ticking is None:
            self._ticking = self._loop.call_later(RESOLUTION, self._tick)

    def _tick(self) -> None:
        self._ticking = None
        now = self._loop.time()
        current = math.ceil(now / RESOLUTION)
        later: list[Alarm] = []
        while self._order and self._order[0] <= current:
            slot = heapq.heappop(self._order)
            for alarm in self._slots.pop(slot):
                if alarm.slot != slot:
                    continue  # moved to an earlier slot meanwhile, and handled there
                alarm.slot = 0
                task = alarm.task
                if task is None or task.done():
                    continue
                if alarm.deadline > now:
                    later.append(alarm)
                elif alarm.waiting and not alarm.rung:
                    alarm.rung = True
                    task.cancel()
                elif not alarm.rung:
                    # Busy with a frame: it looks at its deadline before waiting again;
                    # looked at once more next tick in case it is already waiting.
                    later.append(alarm)
        for alarm in later:
            self._put(alarm, max(current + 1, math.ceil(alarm.deadline / RESOLUTION)))
        if self._order and self._ticking is None:
            self._ticking = self._loop.call_later(RESOLUTION, self._tick)


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Wheel] = (
    weakref.WeakKeyDictionary())


def wheel() -> Wheel:
    """The running loop's wheel (each test client runs its own loop)."""
    loop = asyncio.get_running_loop()
    found = _WHEELS.get(loop)
    if found is None:
        found = _WHEELS[loop] = Wheel(loop)
    return found
