"""The shared adapter base: classification, accounting, events, secrets, probes."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, Registry, State
from brownout.adapter import (
    Adapter,
    AdapterStats,
    DependencyError,
    OperationEvent,
)
from brownout.testing import FakeClock
from tests._fake_adapter import SECRET, FakeAdapter, Missing


def make(**kw: object) -> tuple[FakeAdapter, list[OperationEvent]]:
    adapter = FakeAdapter(
        config=BreakerConfig(consecutive_failures=2, open_for=10), clock=FakeClock(), **kw
    )
    events: list[OperationEvent] = []
    adapter.add_listener(events.append)
    return adapter, events


def test_operations_are_accounted_and_published() -> None:
    adapter, events = make()
    assert adapter.get("a") == b"a"
    assert adapter.get("none") is None
    assert [(e.operation, e.outcome, e.cache_hits, e.cache_misses) for e in events] == [
        ("get", "success", 1, 0),
        ("get", "success", 0, 1),
    ]
    health = adapter.health()
    assert health["totals"] == {"cache_hits": 1, "cache_misses": 1}
    assert health["success_rate"] == 1.0
    assert health["breaker"]["state"] == "closed"
    assert health["recent"][-1]["key"] == "none"


def test_caller_errors_pass_through_and_never_trip() -> None:
    adapter, events = make()
    for _ in range(10):
        with pytest.raises(Missing):
            adapter.get("missing")
    assert adapter.breaker.state is State.CLOSED
    assert {e.outcome for e in events} == {"caller_error"}


def test_failures_trip_then_rejections_are_published() -> None:
    adapter, events = make(secrets=[SECRET])
    adapter.up = False
    for _ in range(2):
        with pytest.raises(DependencyError) as info:
            adapter.get("a")
        assert SECRET not in str(info.value)
        assert info.value.kind == "connection"
    with pytest.raises(BreakerOpen):
        adapter.get("a")
    assert [e.outcome for e in events] == ["failure", "failure", "rejected"]
    assert events[0].error_kind == "connection"
    health = adapter.health()
    assert SECRET not in repr(health)
    assert health["last_error"].startswith("ConnectionError")


def test_client_errors_without_secrets_are_reraised_as_is() -> None:
    adapter, _ = make()
    adapter.up = False
    with pytest.raises(ConnectionError):
        adapter.get("a")


def test_registry_and_presets() -> None:
    registry = Registry.with_defaults()
    adapter = FakeAdapter(name="fake", registry=registry)
    assert registry.get("fake") is adapter.breaker
    with pytest.raises(ValueError, match="not both"):
        FakeAdapter(breaker=adapter.breaker, config=BreakerConfig())


def test_sync_probe_does_not_use_the_breaker() -> None:
    adapter, _ = make()
    adapter.breaker.force_open()
    assert adapter.probe().ok
    adapter.up = False
    result = adapter.probe()
    assert not result.ok and result.error == "ConnectionError: down"
    assert adapter.health()["last_probe"]["ok"] is False


async def test_async_probe_times_out() -> None:
    adapter = FakeAdapter(probe_timeout=0.05)
    adapter.probe_delay = 5.0
    result = await adapter.aprobe()
    assert not result.ok and result.error is not None and "timed out" in result.error


def test_listener_errors_are_contained() -> None:
    adapter, _ = make()
    adapter.add_listener(lambda e: 1 / 0)
    assert adapter.get("a") == b"a"


def test_error_table_rows_for_docs() -> None:
    rows = FakeAdapter.errors.rows()
    assert rows[0] == ("ConnectionError", "counts", "connection", "unreachable")
    assert rows[1][1] == "does not count"


def test_figures_age_out_after_the_horizon() -> None:
    """An outage's failures stop weighing on the success rate after a minute, traffic or not."""
    clock = FakeClock()
    fa = FakeAdapter(clock=clock, config=BreakerConfig(consecutive_failures=10))
    fa.up = False
    for _ in range(3):
        with pytest.raises(ConnectionError):
            fa.get("k")
    fa.up = True
    fa.get("k")
    success, p95, samples = fa.stats.window()
    assert (success, samples) == (0.25, 4)
    assert p95 is not None
    clock.advance(fa.stats.horizon - 1)
    fa.get("k")
    success, p95, samples = fa.stats.window()
    assert (success, samples) == (pytest.approx(0.4), 5)
    assert p95 is not None
    clock.advance(2)  # the first four are now older than the horizon
    success, _, samples = fa.stats.window()
    assert (success, samples) == (1.0, 1)
    assert fa.stats.window(calls=0)[2] == 0
    clock.advance(fa.stats.horizon)
    assert fa.stats.window() == (None, None, 0)


def test_a_component_recovers_its_score_once_the_outage_ages_out() -> None:
    from brownout.health import Component, DegradationManager

    clock = FakeClock()
    fa = FakeAdapter(clock=clock, config=BreakerConfig(consecutive_failures=10))
    manager = DegradationManager([Component.of(fa, "cache")], clock=clock)
    fa.up = False
    for _ in range(2):
        with pytest.raises(ConnectionError):
            fa.get("k")
    fa.up = True
    for _ in range(8):
        fa.get("k")
    manager.evaluate("test")
    before = _score(manager, "cache")
    assert before < 90  # 80 % success: -60 points
    clock.advance(fa.stats.horizon + 1)  # no traffic at all
    fa.get("k")
    manager.evaluate("test")
    assert _score(manager, "cache") == 100.0
    manager.close()


def _score(manager: object, name: str) -> float:
    components = manager.explain()["components"]  # type: ignore[attr-defined]
    (found,) = [c for c in components if c["name"] == name]
    return float(found["score"])


# ---------------------------------------------------------------- the lean path and lazy figures


class LeanAdapter(Adapter):
    """Runs its operations through the lean path (``_command`` / ``_acommand``), as Redis does."""

    kind = "lean"
    errors = FakeAdapter.errors

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.store: dict[str, bytes] = {}
        self.up = True

    def _fetch(self, key: str) -> bytes | None:
        if not self.up:
            raise ConnectionError(f"cannot reach fake://user:{SECRET}@host")
        if key == "missing":
            raise Missing(key)
        return self.store.get(key)

    async def _afetch(self, key: str) -> bytes | None:
        return self._fetch(key)

    def get(self, key: str) -> bytes | None:
        return self._command(self._fetch, (key,), "get", _lookup, key)

    async def aget(self, key: str) -> bytes | None:
        return await self._acommand(self._afetch, (key,), "get", _lookup, key)

    def put(self, key: str, value: bytes) -> bool:
        return self._command(self.store.__setitem__, (key, value), "put", _done, key, len(value))

    def decode(self, key: str) -> object:
        return self._command(self._fetch, (key,), "decode", _lookup_then_decode, key)


def _lookup(raw: bytes | None, figs: list[int]) -> bytes | None:
    if raw is None:
        figs[3] = 1
    else:
        figs[1], figs[2] = len(raw), 1
    return raw


def _done(raw: object, figs: list[int]) -> bool:
    return True


def _lookup_then_decode(raw: bytes | None, figs: list[int]) -> object:
    if _lookup(raw, figs) is None:
        return None
    raise Missing("not decodable")  # after the lookup filled in its figures


def lean(**kw: object) -> tuple[LeanAdapter, list[OperationEvent]]:
    adapter = LeanAdapter(
        config=BreakerConfig(consecutive_failures=2, open_for=10), clock=FakeClock(), **kw
    )
    events: list[OperationEvent] = []
    adapter.add_listener(events.append)
    return adapter, events


async def test_the_lean_path_accounts_like_the_generic_one() -> None:
    adapter, events = lean()
    assert adapter.put("a", b"xyz") is True
    assert adapter.get("a") == b"xyz"
    assert await adapter.aget("b") is None
    assert [(e.operation, e.outcome, e.key) for e in events] == [
        ("put", "success", "a"),
        ("get", "success", "a"),
        ("get", "success", "b"),
    ]
    assert (events[0].bytes_sent, events[1].bytes_received, events[1].cache_hits) == (3, 3, 1)
    assert events[2].cache_misses == 1 and events[0].dependency == "lean"
    health = adapter.health()
    assert health["operations"] == {"put": {"success": 1}, "get": {"success": 2}}
    assert health["totals"] == {
        "bytes_sent": 3,
        "bytes_received": 3,
        "cache_hits": 1,
        "cache_misses": 1,
    }
    assert [(r["operation"], r["key"], r["bytes"]) for r in health["recent"]] == [
        ("put", "a", 3),
        ("get", "a", 3),
        ("get", "b", 0),
    ]
    # the lean path stamps on the adapter's clock; 'at' is still wall-clock time
    assert abs(health["recent"][-1]["at"] - time.time()) < 60
    assert health["samples"] == 3 and health["success_rate"] == 1.0
    assert adapter.breaker.snapshot().calls == 3


def test_the_lean_path_classifies_errors_and_trips_the_breaker() -> None:
    adapter, events = lean(secrets=[SECRET])
    for _ in range(5):
        with pytest.raises(Missing):
            adapter.get("missing")
    assert adapter.breaker.state is State.CLOSED  # caller errors never count
    adapter.up = False
    for _ in range(2):
        with pytest.raises(DependencyError) as info:
            adapter.get("k")
        assert SECRET not in str(info.value)
    assert adapter.breaker.snapshot().state is State.OPEN
    with pytest.raises(BreakerOpen):
        adapter.get("k")
    assert [e.outcome for e in events] == ["caller_error"] * 5 + ["failure"] * 2 + ["rejected"]
    assert adapter.stats.operations["get"] == {"caller_error": 5, "failure": 2, "rejected": 1}
    assert adapter.stats.last_error is not None and SECRET not in adapter.stats.last_error
    assert adapter.stats.window()[:1] == (0.0,)  # two counted outcomes, both failures


def test_a_read_that_fails_keeps_the_figures_it_filled_in() -> None:
    adapter, events = lean()
    adapter.store["j"] = b"{not json"
    with pytest.raises(Missing):
        adapter.decode("j")
    assert (events[-1].outcome, events[-1].cache_hits, events[-1].bytes_received) == (
        "caller_error",
        1,
        9,
    )
    assert adapter.breaker.snapshot().total_ignored == 1  # read runs inside the guarded call


def test_the_lean_path_returns_the_breaker_fallback() -> None:
    breaker = CircuitBreaker(
        "fb",
        BreakerConfig(consecutive_failures=1, record=(ConnectionError,)),
        fallback=lambda e: b"-",
    )
    adapter = LeanAdapter(breaker=breaker)
    adapter.up = False
    assert adapter.get("k") == b"-"  # the failure is recorded, then the fallback answers
    assert breaker.state is State.OPEN
    assert adapter.get("k") == b"-"  # rejected: the fallback answers again


def test_record_keys_off_drops_keys_everywhere() -> None:
    adapter, events = lean()
    adapter.record_keys = False
    adapter.get("secret-key")
    adapter.up = False
    with pytest.raises(ConnectionError):
        adapter.get("secret-key")
    assert [e.key for e in events] == [None, None]
    assert "secret-key" not in repr(adapter.health())


def test_no_event_is_built_without_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    import brownout._adapter as base

    built: list[object] = []

    class Counting(OperationEvent):
        def __new__(cls, *args: object) -> Counting:
            built.append(args)
            return super().__new__(cls, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(base, "OperationEvent", Counting)
    adapter = LeanAdapter()
    fake = FakeAdapter()
    for _ in range(3):
        adapter.get("k")
        fake.get("k")
    assert built == []
    adapter.add_listener(lambda e: None)
    adapter.get("k")
    assert len(built) == 1


def test_pending_records_stay_bounded_and_are_all_counted() -> None:
    adapter = LeanAdapter()
    stats = adapter.stats
    stats.drain_after = 10
    most = 0
    for i in range(1000):
        adapter.put(f"k{i % 7}", b"v")
        most = max(most, len(stats._log))
    assert most <= 10  # folded in as soon as more than drain_after are pending
    assert stats.operations == {"put": {"success": 1000}}
    assert stats._log == []  # reading folds in the rest
    assert stats.totals == {"bytes_sent": 1000}
    assert len(stats.outcomes) == stats.latency_samples  # the last 512
    assert len(stats.recent) == stats.recent_size == 50
    assert stats.recent[-1]["key"] == "k5"  # 999 % 7, the newest last


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Threads switch as often as possible, so that races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("frequent_switches")
def test_counts_are_exact_under_threads() -> None:
    adapter = LeanAdapter()
    adapter.stats.drain_after = 2  # fold all the time, while other threads append
    generic = FakeAdapter()
    threads, per_thread = 8, 4000
    barrier = threading.Barrier(threads)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            adapter.put(f"t{n}", b"ab")
            adapter.get(f"t{n}")
            generic.get("k" if i % 2 else "none")
            if i % 100 == 0:  # readers fold in concurrently
                adapter.stats.view()
                generic.stats.view()

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    total = threads * per_thread
    assert adapter.stats.operations == {"put": {"success": total}, "get": {"success": total}}
    assert adapter.stats.totals == {
        "bytes_sent": 2 * total,
        "bytes_received": 2 * total,
        "cache_hits": total,
    }
    assert generic.stats.operations == {"get": {"success": total}}
    assert generic.stats.totals == {"cache_hits": total // 2, "cache_misses": total // 2}


def test_add_records_a_published_event() -> None:
    stats = AdapterStats(clock=FakeClock())
    stats.add(OperationEvent("redis", "r", "get", "failure", 0.25, "timeout", "k"), "boom")
    stats.add(
        OperationEvent("openai", "o", "chat", "success", 0.5, model="m", prompt_tokens=3), None
    )
    assert stats.operations == {"get": {"failure": 1}, "chat": {"success": 1}}
    assert stats.last_error == "boom" and stats.last_error_at is not None
    assert stats.tokens_by_model == {"m": {"prompt": 3, "completion": 0}}
    assert stats.totals == {"prompt_tokens": 3}
    assert stats.p95() == 0.5
    assert [r["error_kind"] for r in stats.recent] == ["timeout", None]


class StaleAdapter(LeanAdapter):
    """A lean adapter whose fetch can run other calls while it is in flight (issue 10)."""

    during: object = None

    def _fetch(self, key: str) -> bytes | None:
        if key == "slow" and callable(self.during):
            self.during()
        return super()._fetch(key)

    async def _afetch(self, key: str) -> bytes | None:
        if key == "hang":
            await asyncio.Event().wait()
        return self._fetch(key)


@pytest.mark.parametrize("path", ["sync", "async"])
async def test_the_lean_path_keeps_issue_10s_rules(path: str) -> None:
    clock = FakeClock()
    adapter = StaleAdapter(config=BreakerConfig(consecutive_failures=2, open_for=10), clock=clock)
    cb = adapter.breaker

    def story() -> None:  # trip, half-open, close, one more failure, while "slow" is in flight
        adapter.up = False
        for _ in range(2):
            with pytest.raises(ConnectionError):
                adapter.get("k")
        clock.advance(10)
        adapter.up = True
        adapter.get("k")
        adapter.up = False
        with pytest.raises(ConnectionError):
            adapter.get("k")
        adapter.up = True

    adapter.during = story
    if path == "sync":
        adapter.get("slow")
    else:
        await adapter.aget("slow")
    assert cb.snapshot().consecutive_failures == 1  # the stale success reset nothing
    adapter.during = None
    adapter.up = False
    with pytest.raises(ConnectionError):
        adapter.get("k")
    assert cb.state is State.OPEN

    cb.reset()
    with pytest.raises(TimeoutError):  # the caller's own timeout counts as a failure
        async with asyncio.timeout(0):
            await adapter.aget("hang")
    for _ in range(5):
        await asyncio.sleep(0)
    assert cb.snapshot().consecutive_failures == 1

    cb.disable()
    before = cb.snapshot()
    with pytest.raises(ConnectionError):
        adapter.get("k")
    after = cb.snapshot()
    assert (after.total_failures, after.last_failure_at) == (
        before.total_failures,
        before.last_failure_at,
    )


async def test_the_lean_paths_build_the_record_record_of_builds() -> None:
    """_command and _acommand build their success record inline (a hot-path twin of
    record_of); the two must not drift apart."""
    from brownout._adapter_stats import Figures, record_of

    clock = FakeClock(5.0)
    adapter = LeanAdapter(clock=clock)
    adapter.store["k"] = b"abc"
    adapter.stats.drain_after = 100
    adapter.put("p", b"12")
    adapter.get("k")
    await adapter.aget("k")
    assert adapter.stats._log == [
        record_of("put", "success", 0.0, None, Figures("p", 2), 5.0, None, None),
        record_of("get", "success", 0.0, None, Figures("k", 0, 3, 1, 0), 5.0, None, None),
        record_of("get", "success", 0.0, None, Figures("k", 0, 3, 1, 0), 5.0, None, None),
    ]
