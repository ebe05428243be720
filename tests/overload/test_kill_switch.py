"""The kill switch (``BROWNOUT_DISABLED=1`` when a guard is created) takes the overload
guards out of the path: a bulkhead admits every call at once, an adaptive throttle never
rejects, a retry budget never denies; all of them still count, and say they are disabled.
Each test would be refused (or denied) by the same guard built without the kill switch:
that is checked first, on a guard built alongside it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brownout.overload import (
    AdaptiveThrottle,
    Bulkhead,
    BulkheadFull,
    GuardPreset,
    RetryBudget,
    Throttled,
)
from brownout.prometheus import PrometheusMetrics
from brownout.testing import FakeClock


@pytest.fixture
def killed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kill switch on for the whole test (guards read it when they are created)."""
    monkeypatch.setenv("BROWNOUT_DISABLED", "1")


class Recorder:
    """A LimitPolicy that records its samples and keeps a settable limit."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.samples: list[tuple[float, int, bool]] = []

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, now: float, rtt: float, inflight: int, dropped: bool) -> int:
        self.samples.append((rtt, inflight, dropped))
        return self._limit


# -- bulkhead -----------------------------------------------------------------------------


def test_a_bulkhead_admits_every_call_at_once_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    guarded = Bulkhead("redis", limit=2, clock=FakeClock())
    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    clock = FakeClock()
    bh = Bulkhead("redis", limit=2, clock=clock)  # max_wait 0: refuse at once when full
    # the same bulkhead without the kill switch refuses the third call
    assert guarded.try_acquire() and guarded.try_acquire()
    with pytest.raises(BulkheadFull):
        guarded.acquire().__enter__()
    assert guarded.disabled is False and guarded.snapshot().peak_in_use is None

    assert bh.disabled is True
    permits = [bh.acquire().__enter__() for _ in range(4)]
    extra = bh.try_acquire()
    assert extra is not None
    assert bh.call(len, "abc") == 3
    assert bh.in_use == 5 and bh.saturation == 2.5  # observation: above the limit
    snap = bh.snapshot()
    assert snap.disabled is True
    assert (snap.limit, snap.in_use, snap.waiting, snap.peak_in_use) == (2, 5, 0, 6)
    assert (snap.admitted, snap.rejected, snap.waited) == (6, 0, 0)
    assert snap.to_dict()["disabled"] is True
    assert "BROWNOUT_DISABLED" in repr(bh)
    clock.advance(0.5)
    for permit in [*permits, extra]:
        permit.release()
    assert bh.in_use == 0
    snap = bh.snapshot()
    # hold times still feed the average (the call above held its permit 0 s)
    assert snap.peak_in_use == 6 and snap.mean_hold is not None and snap.mean_hold > 0


def test_the_kill_switch_is_read_when_the_bulkhead_is_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    unguarded = Bulkhead("redis", limit=1)
    monkeypatch.delenv("BROWNOUT_DISABLED")
    guarded = Bulkhead("redis", limit=1)
    assert type(guarded) is Bulkhead  # an enabled bulkhead keeps the class's paths
    assert unguarded.disabled and not guarded.disabled
    held = [unguarded.try_acquire(), unguarded.try_acquire()]
    assert all(p is not None for p in held)  # still disabled: read when it was created
    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    assert guarded.try_acquire() is not None
    assert guarded.try_acquire() is None  # still guarding


@pytest.mark.usefixtures("killed")
async def test_an_async_bulkhead_never_waits_nor_refuses() -> None:
    bh = Bulkhead("redis", limit=1, max_wait=3600.0, max_waiting=0)
    gate = asyncio.Event()
    inside = 0

    async def call() -> None:
        nonlocal inside
        async with bh.acquire():
            inside += 1
            await gate.wait()

    tasks = [asyncio.create_task(call()) for _ in range(10)]
    for _ in range(100):  # every task gets in while the others hold their permits
        await asyncio.sleep(0)
    assert inside == 10 and bh.in_use == 10 and bh.waiting == 0
    gate.set()
    await asyncio.gather(*tasks)
    snap = bh.snapshot()
    assert (snap.in_use, snap.peak_in_use, snap.admitted, snap.rejected) == (0, 10, 10, 0)

    # a cancelled caller gives its permit back
    gate.clear()
    task = asyncio.create_task(call())
    for _ in range(10):
        await asyncio.sleep(0)
    assert bh.in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bh.in_use == 0


@pytest.mark.usefixtures("killed")
def test_threads_are_admitted_beyond_the_limit() -> None:
    bh = Bulkhead("db", limit=1, max_wait=3600.0)
    n = 4
    # only passes if all n are inside at once (the timeout ends a failing run, it
    # measures nothing)
    inside = threading.Barrier(n + 1, timeout=60)
    leave = threading.Event()

    def worker() -> None:
        with bh.acquire():
            inside.wait()
            leave.wait()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    inside.wait()
    assert bh.in_use == n
    leave.set()
    for t in threads:
        t.join()
    assert bh.snapshot().peak_in_use == n and bh.in_use == 0


@pytest.mark.usefixtures("killed")
def test_an_adaptive_policy_keeps_learning_but_never_limits() -> None:
    clock = FakeClock()
    policy = Recorder(limit=1)
    bh = Bulkhead("redis", limit=policy, clock=clock)
    a, b, c = (bh.acquire().__enter__() for _ in range(3))  # 3 in flight, limit 1
    clock.advance(0.2)
    a.release(dropped=True)
    b.release()
    c.release()
    assert [(round(rtt, 6), dropped) for rtt, _, dropped in policy.samples] == [
        (0.2, True),
        (0.2, False),
        (0.2, False),
    ]
    assert [inflight for _, inflight, _ in policy.samples] == [1, 2, 3]
    policy._limit = 2  # the policy's latest limit is shown, not applied
    a.release()  # (already released: no sample)
    d = bh.acquire().__enter__()
    d.release()
    held = [bh.try_acquire() for _ in range(3)]
    assert all(p is not None for p in held)
    snap = bh.snapshot()
    assert (snap.adaptive, snap.limit, snap.in_use, snap.peak_in_use) == (True, 2, 3, 3)


@given(st.lists(st.booleans(), max_size=80))
def test_in_use_and_peak_follow_a_model(steps: list[bool]) -> None:
    """True: acquire (always admitted); False: release the oldest held permit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BROWNOUT_DISABLED", "1")
        bh = Bulkhead("x", limit=2, clock=FakeClock())
    held = []
    peak = admitted = 0
    for acquire in steps:
        if acquire:
            permit = bh.try_acquire() if admitted % 2 else bh.acquire().__enter__()
            assert permit is not None
            held.append(permit)
            admitted += 1
            peak = max(peak, len(held))
        elif held:
            held.pop(0).release()
        assert bh.in_use == len(held)
    snap = bh.snapshot()
    assert (snap.peak_in_use, snap.admitted, snap.rejected, snap.waiting) == (peak, admitted, 0, 0)


# -- adaptive throttle --------------------------------------------------------------------


def test_a_throttle_never_rejects_and_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    roll = [0.999]  # nothing shed while the refusals pile up, then every draw sheds

    def refused_everything(t: AdaptiveThrottle) -> None:
        roll[0] = 0.999
        for _ in range(10):
            t.admit()
            t.refused()
        roll[0] = 0.0

    guarded = AdaptiveThrottle("openai", clock=FakeClock(), random=lambda: roll[0])
    refused_everything(guarded)
    with pytest.raises(Throttled):
        guarded.admit()

    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    t = AdaptiveThrottle("openai", clock=FakeClock(), random=lambda: roll[0])
    refused_everything(t)
    for _ in range(5):
        with t.attempt():
            pass
    snap = t.snapshot()
    assert snap.disabled is True and t.disabled is True
    assert (snap.total_requests, snap.total_rejected, snap.total_refused) == (15, 0, 10)
    assert snap.probability > 0.0  # what it would shed, shown
    assert snap.to_dict()["disabled"] is True
    assert guarded.snapshot().disabled is False


# -- retry budget -------------------------------------------------------------------------


def test_a_retry_budget_never_denies_and_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    guarded = RetryBudget("db", ratio=0.2, floor=0.0, clock=FakeClock())
    for _ in range(10):
        guarded.request()
    assert [guarded.try_retry() for _ in range(5)] == [True, True, False, False, False]

    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    b = RetryBudget("db", ratio=0.2, floor=0.0, clock=FakeClock())
    for _ in range(10):
        b.request()
    assert [b.try_retry() for _ in range(5)] == [True] * 5
    snap = b.snapshot()
    assert snap.disabled is True and b.disabled is True
    assert (snap.requests, snap.allowed, snap.denied) == (10, 5, 0)
    assert (snap.window_retries, snap.available) == (5, 0)  # over what it would allow
    assert snap.to_dict()["disabled"] is True


# -- presets and metrics ------------------------------------------------------------------


@pytest.mark.usefixtures("killed")
def test_registry_presets_build_disabled_guards() -> None:
    guards = GuardPreset(bulkhead=1, throttle=True, retry_budget=True).build("redis")
    assert guards.bulkhead is not None and guards.bulkhead.disabled
    assert guards.throttle is not None and guards.throttle.disabled
    assert guards.retry_budget is not None and guards.retry_budget.disabled
    assert guards.bulkhead.try_acquire() and guards.bulkhead.try_acquire()


def test_metrics_show_the_disabled_guards_and_the_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    enabled = Bulkhead("search", limit=1)
    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    bh = Bulkhead("redis", limit=1)
    throttle = AdaptiveThrottle("openai")
    budget = RetryBudget("db")
    held = [bh.try_acquire() for _ in range(3)]
    assert all(held)
    metrics = PrometheusMetrics()
    for guard in (bh, throttle, budget, enabled):
        metrics.attach(guard)
    value = metrics.registry.get_sample_value
    for name, guard in (("redis", "bulkhead"), ("openai", "throttle"), ("db", "retry_budget")):
        assert value("brownout_guard_disabled", {"name": name, "guard": guard}) == 1.0
    assert value("brownout_guard_disabled", {"name": "search", "guard": "bulkhead"}) == 0.0
    assert value("brownout_bulkhead_in_use", {"name": "redis"}) == 3.0
    assert value("brownout_bulkhead_peak_in_use", {"name": "redis"}) == 3.0
    assert value("brownout_bulkhead_peak_in_use", {"name": "search"}) is None


def test_otel_shows_the_disabled_guards_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from brownout.otel import OTelMetrics

    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    bh = Bulkhead("redis", limit=1)
    assert bh.try_acquire() and bh.try_acquire()
    reader = InMemoryMetricReader()
    OTelMetrics(MeterProvider(metric_readers=[reader])).attach(bh)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        (m.name, tuple(sorted(p.attributes.items()))): p.value  # type: ignore[union-attr]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points  # type: ignore[union-attr]
    }
    assert points[("brownout_guard_disabled", (("guard", "bulkhead"), ("name", "redis")))] == 1
    assert points[("brownout_bulkhead_peak_in_use", (("name", "redis"),))] == 2


class _Named(Bulkhead):
    """A subclass of an application's (no ``__slots__``: it has a ``__dict__``)."""

    def describe(self) -> str:
        return f"bulkhead {self.name}"


class _Slotted(Bulkhead):
    __slots__ = ("tag",)

    def __init__(self, name: str, limit: int) -> None:
        super().__init__(name, limit=limit)
        self.tag = "mine"


@pytest.mark.parametrize("cls", [_Named, _Slotted])
def test_a_subclass_built_under_the_kill_switch_stays_itself(
    cls: type[Bulkhead], killed: None
) -> None:
    """A Bulkhead subclass was switched to the library's unguarded class: one with a
    ``__dict__`` or slots of its own failed to build (TypeError: object layout differs),
    one without lost its own methods and was no longer an instance of its class."""
    bh = cls("redis", limit=1)
    assert isinstance(bh, cls) and bh.disabled
    assert bh.try_acquire() and bh.try_acquire()  # admits past its limit
    assert bh.in_use == 2 and bh.snapshot().peak_in_use == 2
    if isinstance(bh, _Named):
        assert bh.describe() == "bulkhead redis"
    if isinstance(bh, _Slotted):
        assert bh.tag == "mine"
