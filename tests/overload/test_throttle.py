"""Client-side adaptive throttling (SRE book) on a fake clock and a scripted random source."""

from __future__ import annotations

import asyncio

import pytest

from brownout.overload import AdaptiveThrottle, Overloaded, Throttled
from brownout.testing import FakeClock


class Rolls:
    """A random source that answers what the test says."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_nothing_is_rejected_while_the_dependency_accepts(clock: FakeClock) -> None:
    rolls = Rolls(0.0)  # would reject at any positive probability
    t = AdaptiveThrottle("api", clock=clock, random=rolls)
    for _ in range(1000):
        with t.attempt():
            pass
    assert t.probability == 0.0
    assert rolls.calls == 0  # p <= 0: the random source is not even asked
    snap = t.snapshot()
    assert (snap.requests, snap.accepts, snap.total_rejected) == (1000, 1000, 0)


def test_probability_is_the_books_formula(clock: FakeClock) -> None:
    t = AdaptiveThrottle("api", k=2.0, clock=clock, random=Rolls(1.0))
    for _ in range(30):
        t.admit()
        t.accepted()
    for _ in range(70):
        t.admit()
        t.refused()
    # requests 100, accepts 30: (100 - 2 * 30) / 101
    assert t.probability == pytest.approx(40 / 101)
    snap = t.snapshot()
    assert (snap.requests, snap.accepts, snap.total_refused) == (100, 30, 70)
    assert snap.to_dict()["probability"] == pytest.approx(40 / 101)


def test_the_random_source_decides_and_rejections_count_as_requests(clock: FakeClock) -> None:
    rolls = Rolls(1.0)
    t = AdaptiveThrottle("api", k=1.5, clock=clock, random=rolls, retry_after=2.0)
    for _ in range(10):
        t.admit()
        t.refused()
    assert t.probability == pytest.approx(10 / 11)
    rolls.value = 0.5  # below p: rejected
    with pytest.raises(Throttled) as info:
        t.admit()
    err = info.value
    assert isinstance(err, Overloaded)
    assert (err.name, err.retry_after) == ("api", 2.0)
    assert str(err) == "'api' is throttled locally; retry after 2 s"
    assert t.snapshot().requests == 11  # the rejected call is a request too
    rolls.value = 0.99  # above p: admitted
    t.admit()
    assert t.snapshot().total_rejected == 1


def test_the_window_forgets(clock: FakeClock) -> None:
    t = AdaptiveThrottle("api", window=120, buckets=24, clock=clock, random=Rolls(1.0))
    for _ in range(10):
        t.admit()
        t.refused()
    clock.advance(60)
    assert t.probability == pytest.approx(10 / 11)
    clock.advance(65)  # 125 s after: every bucket of the 120 s window is newer
    assert t.probability == 0.0
    assert t.snapshot().total_requests == 10  # lifetime totals stay


def test_k_sets_how_much_over_the_accepts_is_let_through(clock: FakeClock) -> None:
    t = AdaptiveThrottle("api", k=2.0, clock=clock, random=Rolls(1.0))
    # the dependency accepts half: K = 2 lets exactly twice the accepts through
    for i in range(100):
        t.admit()
        if i % 2:
            t.accepted()
    assert t.probability == 0.0


def test_attempt_counts_outcomes_by_refused_on(clock: FakeClock) -> None:
    t = AdaptiveThrottle(
        "api",
        clock=clock,
        random=Rolls(1.0),
        refused_on=(TimeoutError, lambda e: isinstance(e, OSError) and e.errno == 429),
    )
    with pytest.raises(TimeoutError), t.attempt():
        raise TimeoutError
    with pytest.raises(OSError), t.attempt():
        raise OSError(429, "too many requests")
    with pytest.raises(KeyError), t.attempt():
        raise KeyError("the caller's mistake: the dependency answered")
    with t.attempt():
        pass
    snap = t.snapshot()
    assert (snap.requests, snap.accepts, snap.total_refused) == (4, 2, 2)


async def test_async_attempt_and_cancellation(clock: FakeClock) -> None:
    t = AdaptiveThrottle("api", clock=clock, random=Rolls(1.0))
    async with t.attempt():
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        async with t.attempt():
            raise asyncio.CancelledError
    snap = t.snapshot()
    # a cancelled call is neither accepted nor refused
    assert (snap.requests, snap.accepts, snap.total_refused) == (2, 1, 0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"k": 0.5}, "AdaptiveThrottle.k must be a number in [1, 100]"),
        ({"window": 0}, "AdaptiveThrottle.window must be > 0 seconds"),
        ({"buckets": 0}, "AdaptiveThrottle.buckets"),
        ({"retry_after": -1}, "AdaptiveThrottle.retry_after must be >= 0 seconds"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        AdaptiveThrottle("api", **kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_bad_types_are_named() -> None:
    with pytest.raises(TypeError, match=r"AdaptiveThrottle\.refused_on"):
        AdaptiveThrottle("api", refused_on=TimeoutError)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"AdaptiveThrottle\.random"):
        AdaptiveThrottle("api", random=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"AdaptiveThrottle\.window"):
        AdaptiveThrottle("api", window="2m")  # type: ignore[arg-type]
