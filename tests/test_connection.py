"""The light queue and gate under uvicorn's WebSocket protocol, and the timer wheel."""

from __future__ import annotations

import asyncio

from popin.web.connection import Gate, Mailbox
from popin.web.wheel import Alarm, wheel


def test_a_cancelled_read_loses_nothing() -> None:
    async def scenario() -> list[str]:
        box = Mailbox(asyncio.get_running_loop())
        reader = asyncio.create_task(box.get())
        await asyncio.sleep(0)
        reader.cancel()
        box.put_nowait("first")
        box.put_nowait("second")
        await asyncio.gather(reader, return_exceptions=True)
        return [await box.get(), await box.get()]

    assert asyncio.run(scenario()) == ["first", "second"]


def test_a_frame_that_arrives_as_the_timer_wheel_cancels_the_read_is_kept() -> None:
    """The wheel wakes a socket by cancelling its read: a frame put in the same loop
    iteration, before the cancellation, has already resolved the read's waiter. The
    reader sees the cancellation, and the frame is still there for its next read."""
    async def scenario() -> tuple[bool, str]:
        box = Mailbox(asyncio.get_running_loop())
        reader = asyncio.create_task(box.get())
        await asyncio.sleep(0)
        box.put_nowait("frame")
        reader.cancel()
        results = await asyncio.gather(reader, return_exceptions=True)
        return isinstance(results[0], asyncio.CancelledError), await box.get()

    assert asyncio.run(scenario()) == (True, "frame")


def test_writers_wait_while_the_gate_is_shut() -> None:
    async def scenario() -> bool:
        gate = Gate(asyncio.get_running_loop())
        gate.clear()
        writer = asyncio.create_task(gate.wait())
        await asyncio.sleep(0)
        waited = not writer.done()
        gate.set()
        return waited and await writer

    assert asyncio.run(scenario())


def test_the_wheel_wakes_a_waiting_socket_and_nothing_else() -> None:
    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        box = Mailbox(loop)
        woken = asyncio.Event()

        async def socket() -> None:
            task = asyncio.current_task()
            assert task is not None
            alarm = Alarm(task)
            wheel().set(alarm, loop.time() + 0.05)
            alarm.waiting = True
            try:
                await box.get()
            except asyncio.CancelledError:
                if alarm.woken():
                    woken.set()
                    return
                raise

        task = asyncio.create_task(socket())
        await asyncio.wait_for(woken.wait(), 2)
        await task
        # A stopped alarm holds no task and wakes nobody.
        other = asyncio.create_task(box.get())
        alarm = Alarm(other)
        wheel().set(alarm, loop.time() + 0.05)
        alarm.waiting = True
        wheel().stop(alarm)
        await asyncio.sleep(0.3)
        survived = not other.done()
        box.put_nowait("x")
        return survived, await other == "x"

    assert asyncio.run(scenario()) == (True, True)
