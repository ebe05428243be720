"""Retry budget (Finagle / Envoy) on a fake clock."""

from __future__ import annotations

import threading

import pytest

from brownout.overload import RetryBudget
from brownout.testing import FakeClock


def test_retries_stay_within_the_ratio_of_requests() -> None:
    b = RetryBudget("db", ratio=0.2, floor=0.0, clock=FakeClock())
    assert not b.try_retry()  # no requests, no floor: nothing earned
    for _ in range(100):
        b.request()
    assert b.available == 20
    allowed = sum(b.try_retry() for _ in range(50))
    assert allowed == 20
    snap = b.snapshot()
    assert (snap.requests, snap.allowed, snap.denied) == (100, 20, 31)
    assert (snap.window_requests, snap.window_retries, snap.available) == (100, 20, 0)
    assert snap.to_dict()["denied"] == 31


def test_the_floor_allows_a_few_retries_per_second_of_window() -> None:
    b = RetryBudget("db", ratio=0.2, window=10, floor=0.5, clock=FakeClock())
    # 0.5 / s over 10 s: 5 retries with no requests at all
    assert [b.try_retry() for _ in range(6)] == [True] * 5 + [False]


def test_the_window_forgets_requests_and_retries() -> None:
    clock = FakeClock()
    b = RetryBudget("db", ratio=0.5, window=10, floor=0.0, buckets=10, clock=clock)
    for _ in range(10):
        b.request()
    assert [b.try_retry() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(5)
    for _ in range(4):
        b.request()
    assert b.try_retry()  # 14 requests earn 7; 5 spent
    clock.advance(6)  # the first 10 requests and 5 retries left the window
    assert b.snapshot().window_requests == 4
    assert [b.try_retry() for _ in range(3)] == [True, False, False]  # 4 * 0.5 = 2, 1 spent
    clock.advance(60)
    assert b.available == 0
    assert b.snapshot().requests == 14


def test_an_outage_cannot_turn_into_a_retry_storm() -> None:
    """Every request fails and every caller wants 3 retries: the extra load on the
    dependency stays within ratio (+ the floor), not 3x."""
    clock = FakeClock()
    b = RetryBudget("db", clock=clock)  # defaults: 20 % over 10 s, floor 10/s
    sent = 0
    for _ in range(60):  # 60 s at 1000 requests/s
        for _ in range(1000):
            b.request()
            sent += 1
            for _ in range(3):
                if not b.try_retry():
                    break
                sent += 1
        clock.advance(1.0)
    snap = b.snapshot()
    assert snap.requests == 60_000
    assert snap.allowed <= 0.2 * 60_000 + 10 * 60 + 10 * 10  # ratio + floor, one window slack
    assert sent - snap.requests == snap.allowed


def test_threads_share_one_budget_exactly() -> None:
    b = RetryBudget("db", ratio=0.1, floor=0.0, clock=FakeClock())
    for _ in range(1000):
        b.request()
    results: list[bool] = []
    lock = threading.Lock()

    def spend() -> None:
        for _ in range(100):
            ok = b.try_retry()
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 100


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ratio": -0.1}, "RetryBudget.ratio must be a number in [0, 1000]"),
        ({"window": 0}, "RetryBudget.window must be > 0 seconds"),
        ({"floor": float("inf")}, "RetryBudget.floor"),
        ({"buckets": 0}, "RetryBudget.buckets"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        RetryBudget("db", **kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    with pytest.raises(ValueError, match=r"RetryBudget\.name"):
        RetryBudget("")
