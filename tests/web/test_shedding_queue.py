"""Priority shedding with a queue (``Shedder(max_queue_wait=...)``, ``acquire``): requests
over the limit wait for a slot, most important class first, instead of being refused."""

from __future__ import annotations

import asyncio

import pytest

from brownout import CircuitBreaker
from brownout.health import Component, DegradationManager, Level
from brownout.testing import FakeClock
from brownout.web import Criticality, ShedDecision, Shedder

CRITICAL, DEFAULT, SHEDDABLE = Criticality.CRITICAL, Criticality.DEFAULT, Criticality.SHEDDABLE
LONG = 3600.0  # a wait that never ends within a test: only releases admit


def queued(max_in_flight: int = 2, wait: float = LONG, **kwargs: object) -> Shedder:
    kwargs.setdefault("critical_reserve", 0)  # the reserve has a test of its own
    return Shedder(max_in_flight=max_in_flight, max_queue_wait=wait, clock=FakeClock(), **kwargs)  # type: ignore[arg-type]


async def waiting(shedder: Shedder, c: Criticality) -> asyncio.Task[ShedDecision | None]:
    """``acquire(c)`` started and parked in the queue."""
    before = shedder.queued
    task = asyncio.create_task(shedder.acquire(c))
    await asyncio.sleep(0)
    assert shedder.queued == before + 1, "expected it to wait"
    return task


async def test_over_the_limit_a_request_waits_and_is_admitted_by_a_release() -> None:
    shedder = queued(max_in_flight=2)
    assert await shedder.acquire(DEFAULT) is None
    assert await shedder.acquire(DEFAULT) is None  # 2 of 2: the next one waits
    task = await waiting(shedder, DEFAULT)
    assert not task.done() and shedder.in_flight == 2
    shedder.release(DEFAULT)
    assert await task is None  # admitted: it has the freed slot
    assert shedder.in_flight == 2 and shedder.queued == 0
    snap = shedder.snapshot()
    assert snap["waited"]["default"] == 1 and snap["peak_queued"] == 1
    assert snap["shed"]["default"] == {"overload": 0, "level": 0}


async def test_waiting_requests_go_most_important_class_first_in_arrival_order() -> None:
    shedder = queued(max_in_flight=2, shed_at={SHEDDABLE: 1.0, DEFAULT: 1.0})
    for _ in range(2):
        assert await shedder.acquire(DEFAULT) is None
    order: list[str] = []

    async def one(c: Criticality, name: str) -> None:
        assert await shedder.acquire(c) is None
        order.append(name)

    tasks = []
    for c, name in [(SHEDDABLE, "s1"), (DEFAULT, "d1"), (CRITICAL, "c1"), (DEFAULT, "d2")]:
        tasks.append(asyncio.create_task(one(c, name)))
        await asyncio.sleep(0)
    assert shedder.queued == 4
    assert shedder.snapshot()["queued_by_class"] == {"critical": 1, "default": 2, "sheddable": 1}
    for _ in range(4):
        shedder.release(DEFAULT)  # one slot at a time
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["c1", "d1", "d2", "s1"]


async def test_a_newcomer_does_not_pass_those_waiting_in_its_class() -> None:
    shedder = queued(max_in_flight=1)
    assert await shedder.acquire(DEFAULT) is None
    first = await waiting(shedder, DEFAULT)
    # the slot frees before the waiters are looked at (as between two callbacks): a
    # newcomer sees room, but one is waiting before it
    shedder._in_flight[DEFAULT] -= 1
    shedder._total -= 1
    second = asyncio.create_task(shedder.acquire(DEFAULT))
    await asyncio.sleep(0)  # it queued behind the first, which took the free slot
    assert await first is None
    assert shedder.queued == 1 and not second.done()
    shedder.release(DEFAULT)
    assert await second is None


async def test_a_request_that_waited_too_long_is_refused_with_the_wait_named() -> None:
    shedder = queued(max_in_flight=1, wait=0.01)
    assert await shedder.acquire(DEFAULT) is None
    refused = await shedder.acquire(DEFAULT)
    assert refused is not None and refused.reason == "overload"
    assert "waited 0.01 s for a slot" in refused.detail
    assert shedder.queued == 0
    assert shedder.snapshot()["shed"]["default"]["overload"] == 1
    shedder.release(DEFAULT)  # the given-up waiter is skipped, nothing leaks
    assert shedder.in_flight == 0


async def test_critical_requests_wait_first_in_line_then_are_served_whatever_the_load() -> None:
    shedder = queued(max_in_flight=1, wait=0.01)
    assert await shedder.acquire(DEFAULT) is None
    assert await shedder.acquire(CRITICAL) is None  # waited 10 ms, then served over the limit
    assert shedder.in_flight == 2
    assert shedder.snapshot()["waited"]["critical"] == 1
    assert shedder.snapshot()["shed"]["critical"] == {"overload": 0, "level": 0}
    assert shedder.shedding() == ["default", "sheddable"]  # never "critical"


async def test_a_full_queue_refuses_at_once_except_critical_requests() -> None:
    shedder = queued(max_in_flight=1, max_queued=1)
    assert await shedder.acquire(DEFAULT) is None
    parked = await waiting(shedder, DEFAULT)
    refused = await shedder.acquire(DEFAULT)  # the queue is full
    assert refused is not None and refused.reason == "overload"
    assert await shedder.acquire(CRITICAL) is None  # never refused, never parked beyond
    assert shedder.in_flight == 2
    parked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await parked


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    shedder = queued(max_in_flight=1)
    assert await shedder.acquire(DEFAULT) is None
    task = await waiting(shedder, DEFAULT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert shedder.queued == 0
    shedder.release(DEFAULT)
    assert shedder.in_flight == 0
    assert await shedder.acquire(DEFAULT) is None  # the slot is free


async def test_the_level_refuses_at_once_it_is_not_waited_out() -> None:
    clock = FakeClock()
    manager = DegradationManager(
        [Component("database", breaker=CircuitBreaker("database", clock=clock))], [], clock=clock
    )
    manager.pin(Level.MINIMAL, duration=LONG)
    shedder = Shedder(max_in_flight=10, max_queue_wait=LONG, manager=manager, clock=clock)
    refused = await shedder.acquire(SHEDDABLE)
    assert refused is not None and refused.reason == "level"
    assert shedder.queued == 0


async def test_without_max_queue_wait_acquire_is_admit() -> None:
    shedder = Shedder(max_in_flight=1, clock=FakeClock())
    assert await shedder.acquire(DEFAULT) is None
    refused = await shedder.acquire(DEFAULT)
    assert refused is not None and "waited" not in refused.detail
    assert await shedder.acquire(CRITICAL) is None  # at once, over the limit
    assert shedder.snapshot()["max_queue_wait_ms"] == 0


async def test_a_falling_queueing_delay_admits_those_waiting() -> None:
    shedder = queued(max_in_flight=10)
    shedder.observe_delay(1.0)  # the loop is behind: default requests wait
    task = await waiting(shedder, DEFAULT)
    shedder.observe_delay(0.0)
    assert await task is None


def test_bad_queue_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="max_queue_wait"):
        Shedder(max_queue_wait=-1)
    with pytest.raises(ValueError, match="max_queue_wait"):
        Shedder(max_queue_wait=float("nan"))
    with pytest.raises(ValueError, match="max_queued"):
        Shedder(max_queued=-1)
    assert Shedder(max_in_flight=3).max_queued == 48


async def test_critical_requests_have_slots_of_their_own_over_the_limit() -> None:
    shedder = queued(max_in_flight=4, critical_reserve=2)
    for _ in range(4):
        assert await shedder.acquire(DEFAULT) is None
    parked = await waiting(shedder, DEFAULT)  # the others stop at max_in_flight
    assert await shedder.acquire(CRITICAL) is None  # the reserve: at once
    assert await shedder.acquire(CRITICAL) is None
    assert shedder.in_flight == 6
    critical = await waiting(shedder, CRITICAL)  # the reserve is full: first in line
    shedder.release(DEFAULT)
    assert await critical is None  # the freed slot goes to the critical one
    assert not parked.done() and shedder.in_flight == 6
    parked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await parked
    assert shedder.snapshot()["critical_reserve"] == 2


def test_the_critical_reserve_defaults_to_half_the_limit_and_is_checked() -> None:
    assert Shedder(max_in_flight=16).critical_reserve == 8
    assert Shedder(max_in_flight=1).critical_reserve == 0
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="critical_reserve"):
            Shedder(max_in_flight=4, critical_reserve=bad)  # type: ignore[arg-type]
