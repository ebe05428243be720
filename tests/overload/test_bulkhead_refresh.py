"""Bulkhead.refresh_limit: a policy's limit read between calls (inventario: on a change of
degradation level), on a fake clock."""

from __future__ import annotations

import asyncio
import threading

from brownout.overload import Bulkhead
from brownout.testing import FakeClock, aeventually, eventually


class Settable:
    """A limit policy whose limit the test sets (as a level change does)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.samples = 0

    def on_sample(self, now: float, rtt: float, inflight: int, dropped: bool) -> int:
        self.samples += 1
        return self.limit


def test_a_smaller_limit_acts_on_the_next_permit_and_takes_none_back() -> None:
    policy = Settable(4)
    bulkhead = Bulkhead("s3", limit=policy, clock=FakeClock())
    held = [bulkhead.try_acquire() for _ in range(3)]
    assert all(p is not None for p in held)
    policy.limit = 2
    assert bulkhead.limit == 4  # not read yet: no call has finished
    assert bulkhead.refresh_limit() == 2 and bulkhead.limit == 2
    assert bulkhead.in_use == 3 and bulkhead.try_acquire() is None  # 3 held, none taken
    assert policy.samples == 0  # reading the limit is no sample
    for permit in held:
        assert permit is not None
        permit.release()
    assert [bulkhead.try_acquire() is not None for _ in range(3)] == [True, True, False]


def test_a_larger_limit_lets_queued_threads_in_at_once() -> None:
    policy = Settable(1)
    bulkhead = Bulkhead("database", limit=policy, max_wait=60.0, max_waiting=8, clock=FakeClock())
    held = bulkhead.try_acquire()
    assert held is not None
    inside = threading.Semaphore(0)
    leave = threading.Event()

    def worker() -> None:
        with bulkhead.acquire():
            inside.release()
            leave.wait()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    eventually(lambda: bulkhead.waiting == 3, what="3 queued")
    policy.limit = 3
    assert bulkhead.refresh_limit() == 3
    for _ in range(2):  # two let in, with the first permit still held
        assert inside.acquire(timeout=30)
    assert (bulkhead.in_use, bulkhead.waiting) == (3, 1)
    leave.set()
    held.release()
    assert inside.acquire(timeout=30)  # the last one when a permit is given back
    for t in threads:
        t.join(30)
    assert bulkhead.in_use == 0


async def test_a_larger_limit_lets_queued_tasks_in_at_once() -> None:
    policy = Settable(1)
    bulkhead = Bulkhead("s3", limit=policy, max_wait=60.0, clock=FakeClock())
    held = bulkhead.try_acquire()
    assert held is not None
    admitted = asyncio.Event()

    async def task() -> None:
        async with bulkhead.acquire():
            admitted.set()

    waiting = asyncio.create_task(task())
    await aeventually(lambda: bulkhead.waiting == 1, what="queued")
    policy.limit = 2
    bulkhead.refresh_limit()
    await admitted.wait()
    await waiting
    held.release()
    assert bulkhead.in_use == 0


def test_a_fixed_limit_has_nothing_to_read() -> None:
    bulkhead = Bulkhead("redis", limit=3)
    assert bulkhead.refresh_limit() == 3 and bulkhead.limit == 3


def test_a_policy_answering_zero_after_a_call_still_leaves_one_permit() -> None:
    # a limit of 0 would admit nothing again, and with nothing admitted no sample would
    # ever raise it: the bulkhead keeps at least 1, after a call as in refresh_limit
    policy = Settable(2)
    bulkhead = Bulkhead("custom", limit=policy, clock=FakeClock())
    permit = bulkhead.try_acquire()
    assert permit is not None
    policy.limit = 0
    permit.release()
    assert bulkhead.limit == 1
    again = bulkhead.try_acquire()
    assert again is not None and bulkhead.try_acquire() is None
    again.release()
    assert bulkhead.refresh_limit() == 1
