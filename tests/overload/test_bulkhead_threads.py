"""Bulkhead under real threads: the lock-free fixed-limit path against a model.

A Hypothesis state machine drives worker threads (each blocks in ``acquire``
for real) one step at a time and compares the bulkhead with a FIFO model: never
more than ``limit`` in flight, a release wakes the first waiter, no token lost
or made up. A stress test then runs threads freely with a tiny switch interval.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from brownout.overload import Bulkhead, BulkheadFull, Permit
from brownout.testing import eventually

WORKERS = 5


class Worker:
    """A thread that acquires and releases a permit when told to."""

    def __init__(self, bulkhead: Bulkhead) -> None:
        self.bulkhead = bulkhead
        self.commands: queue.Queue[str] = queue.Queue()
        self.state = "idle"  # idle | acquiring | holding | refused
        self.permit: Permit | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            command = self.commands.get()
            if command == "stop":
                return
            if command == "acquire":
                self.state = "acquiring"
                permit = self.bulkhead.acquire()
                try:
                    permit.__enter__()
                except BulkheadFull:
                    self.state = "refused"
                else:
                    self.permit = permit
                    self.state = "holding"
            elif command == "release":
                assert self.permit is not None
                permit, self.permit = self.permit, None
                permit.__exit__(None, None, None)
                self.state = "idle"


class FixedBulkheadMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.workers: list[Worker] = []
        self.holders: list[int] = []
        self.queued: list[int] = []
        self.idle: list[int] = []
        self.extra: list[Permit] = []  # taken with try_acquire by the test thread
        self.limit = 1
        self.admitted = 0
        self.rejected = 0

    @initialize(limit=st.integers(1, 3))
    def start(self, limit: int) -> None:
        self.limit = limit
        # waits are long (the model releases every waiter); the queue holds every worker
        self.bulkhead = Bulkhead("m", limit=limit, max_wait=60, max_waiting=WORKERS)
        self.workers = [Worker(self.bulkhead) for _ in range(WORKERS)]
        self.idle = list(range(WORKERS))

    def in_flight(self) -> int:
        return len(self.holders) + len(self.extra)

    @precondition(lambda self: bool(self.idle))
    @rule(data=st.data())
    def acquire(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from(self.idle))
        self.idle.remove(w)
        worker = self.workers[w]
        worker.commands.put("acquire")
        if self.in_flight() < self.limit and not self.queued:
            eventually(lambda: worker.state == "holding", what=f"worker {w} to hold")
            self.holders.append(w)
            self.admitted += 1
        else:
            waiting = len(self.queued) + 1
            eventually(lambda: self.bulkhead.waiting == waiting, what=f"worker {w} to queue")
            assert worker.state == "acquiring"
            self.queued.append(w)

    @precondition(lambda self: bool(self.holders) or bool(self.extra))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        choices = [("worker", w) for w in self.holders] + [
            ("extra", i) for i in range(len(self.extra))
        ]
        kind, which = data.draw(st.sampled_from(choices))
        if kind == "worker":
            worker = self.workers[which]
            worker.commands.put("release")
            eventually(lambda: worker.state == "idle", what=f"worker {which} to release")
            self.holders.remove(which)
            self.idle.append(which)
        else:
            self.extra.pop(which).release()
        if self.queued:
            first = self.queued.pop(0)
            woken = self.workers[first]
            eventually(lambda: woken.state == "holding", what=f"worker {first} to be woken")
            self.holders.append(first)
            self.admitted += 1

    @rule()
    def try_acquire(self) -> None:
        permit = self.bulkhead.try_acquire()
        if self.in_flight() < self.limit and not self.queued:
            assert permit is not None
            self.extra.append(permit)
            self.admitted += 1
        else:
            assert permit is None

    @precondition(lambda self: bool(self.queued) or self.in_flight() == self.limit)
    @rule()
    def acquire_with_short_wait(self) -> None:
        with pytest.raises(BulkheadFull):
            self.bulkhead.acquire(timeout=0.001).__enter__()
        self.rejected += 1

    @invariant()
    def matches_the_model(self) -> None:
        if not self.workers:
            return
        snap = self.bulkhead.snapshot()
        assert snap.in_use == self.in_flight() <= self.limit
        assert snap.waiting == len(self.queued)
        assert (snap.admitted, snap.rejected) == (self.admitted, self.rejected)
        for w in self.holders:
            assert self.workers[w].state == "holding"
        for w in self.queued:
            assert self.workers[w].state == "acquiring"

    def teardown(self) -> None:
        for permit in self.extra:
            permit.release()
        while self.holders or self.queued:
            for w in list(self.holders):
                worker = self.workers[w]
                worker.commands.put("release")
                eventually(lambda worker=worker: worker.state == "idle")  # type: ignore[misc]
                self.holders.remove(w)
            while self.queued and len(self.holders) < self.limit:
                w = self.queued.pop(0)
                eventually(lambda w=w: self.workers[w].state == "holding")  # type: ignore[misc]
                self.holders.append(w)
        for worker in self.workers:
            worker.commands.put("stop")
        for worker in self.workers:
            worker.thread.join(timeout=10)
        if self.workers:
            assert self.bulkhead.in_use == 0
            assert self.bulkhead.waiting == 0


FixedBulkheadMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFixedBulkhead = FixedBulkheadMachine.TestCase


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.mark.parametrize("max_wait", [0.0, 5.0])
@pytest.mark.usefixtures("tiny_switch_interval")
def test_threads_hammering_a_fixed_limit_never_exceed_it_nor_lose_a_token(
    max_wait: float,
) -> None:
    limit, threads, rounds = 3, 8, 3000
    bh = Bulkhead("stress", limit=limit, max_wait=max_wait, max_waiting=threads)
    guard = threading.Lock()
    running = 0
    peak = 0
    refused = 0
    full = 0  # BulkheadFull from acquire (try_acquire's None is not an error)
    start = threading.Barrier(threads)

    def work() -> None:
        nonlocal running, peak, refused, full
        start.wait()
        for i in range(rounds):
            try:
                if i % 3 == 0:
                    permit = bh.try_acquire()
                    if permit is None:
                        with guard:
                            refused += 1
                        continue
                else:
                    permit = bh.acquire().__enter__()
            except BulkheadFull:
                with guard:
                    refused += 1
                    full += 1
                continue
            with guard:
                running += 1
                peak = max(peak, running)
            time.sleep(0)  # let another thread run while this one holds the permit
            with guard:
                running -= 1
            permit.release()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in pool)
    snap = bh.snapshot()
    assert 1 <= peak <= limit
    assert snap.in_use == 0
    assert snap.waiting == 0
    assert snap.admitted + refused == threads * rounds
    assert snap.rejected == full
    # every token is back: the limit's worth can be taken at once, and no more
    permits = [bh.try_acquire() for _ in range(limit + 1)]
    assert permits[-1] is None
    assert all(p is not None for p in permits[:-1])
    if max_wait:
        assert full == 0  # a 5 s wait is ample for calls that hold nothing


class _ReleaseOnJoin(deque[Any]):
    """A waiters queue that releases ``permit`` just before the first caller joins it:
    the race where a token comes back after the caller found none but before it
    queued (the releaser saw nobody waiting, so it handed the token to nobody)."""

    def __init__(self, permit: Permit) -> None:
        super().__init__()
        self.permit: Permit | None = permit

    def append(self, item: Any) -> None:
        if self.permit is not None:
            permit, self.permit = self.permit, None
            permit.release()
        super().append(item)


def test_a_token_given_back_while_a_thread_joins_the_queue_is_not_lost() -> None:
    bh = Bulkhead("race", limit=1, max_wait=0.5)
    held = bh.try_acquire()
    assert held is not None
    bh._waiters = _ReleaseOnJoin(held)
    with bh.acquire():  # without the re-check after queueing: 0.5 s, then BulkheadFull
        assert bh.in_use == 1
        assert bh.waiting == 0
    snap = bh.snapshot()
    assert (snap.in_use, snap.admitted, snap.rejected, snap.waited) == (0, 2, 0, 1)


async def test_a_token_given_back_while_a_coroutine_joins_the_queue_is_not_lost() -> None:
    bh = Bulkhead("race", limit=1, max_wait=0.5)
    held = bh.try_acquire()
    assert held is not None
    bh._waiters = _ReleaseOnJoin(held)
    async with bh.acquire():
        assert bh.in_use == 1
    assert bh.snapshot().rejected == 0
