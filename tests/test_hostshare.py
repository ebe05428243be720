"""Breaker state shared by the processes of a host (brownout.hostshare, issue 13 item 2).

Each ``HostShare`` stands for one process: several opened on one file in one test are
several processes of one host (each with its own owner id and its own breaker of the
same name). No poller thread (``poll_interval=None``): the tests call ``sync()`` where
the poller would, and move one fake clock for the breakers and the file alike. The
last test runs real processes.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, State
from brownout.hostshare import HostShare
from brownout.testing import FakeClock, eventually

CONFIG = BreakerConfig(consecutive_failures=3, open_for=10.0, half_open_calls=2)


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def shares(tmp_path: Path, clock: FakeClock) -> Iterator[list[HostShare]]:
    made = [
        HostShare(tmp_path / "breakers.db", poll_interval=None, lease=5.0, clock=clock)
        for _ in range(3)
    ]
    yield made
    for share in made:
        share.close()


def breakers(shares: list[HostShare], clock: FakeClock) -> list[CircuitBreaker]:
    out = []
    for share in shares:
        breaker = CircuitBreaker("postgres", config=CONFIG, clock=clock)
        share.attach(breaker)
        out.append(breaker)
    return out


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(CONFIG.consecutive_failures or 0):
        with pytest.raises(Boom):
            breaker.call(fail)
    assert breaker.state is State.OPEN


def sync(shares: list[HostShare]) -> None:
    for share in shares:
        share.sync()


def test_one_process_opens_and_the_others_reject_without_spending_failures(
    shares: list[HostShare], clock: FakeClock
) -> None:
    a, b, c = breakers(shares, clock)
    trip(a)
    assert {b.state, c.state} == {State.CLOSED}  # not before their poller runs
    sync(shares)
    for other in (b, c):
        assert other.state is State.OPEN
        with pytest.raises(BreakerOpen):
            other.call(ok)
        assert other.snapshot().total_failures == 0
    row = shares[0].rows()["postgres"]
    assert (row.state, row.owner) == ("open", shares[0].owner)


def test_failures_in_a_row_count_across_the_host(shares: list[HostShare], clock: FakeClock) -> None:
    """Three processes fail once each: none reaches consecutive_failures (3) alone, the
    host does, and every breaker opens after one failure each, not three."""
    a, b, c = breakers(shares, clock)
    for breaker in (a, b):
        with pytest.raises(Boom):
            breaker.call(fail)
    sync(shares)
    assert {a.state, b.state, c.state} == {State.CLOSED}  # 2 < 3
    with pytest.raises(Boom):
        c.call(fail)
    sync(shares)  # c's poller sees 3 across the host and opens; the others follow
    sync(shares)
    assert [x.state for x in (a, b, c)] == [State.OPEN] * 3
    assert sum(x.snapshot().total_failures for x in (a, b, c)) == 3
    row = shares[0].rows()["postgres"]
    assert row.state == "open" and "across this host" in row.reason


def test_a_success_resets_its_process_streak_and_old_streaks_expire(
    shares: list[HostShare], clock: FakeClock
) -> None:
    a, b, c = breakers(shares, clock)
    for _ in range(2):
        with pytest.raises(Boom):
            a.call(fail)
    sync(shares)
    assert a.call(ok) == "ok"  # a's streak ends
    with pytest.raises(Boom):
        b.call(fail)
    sync(shares)
    assert b.state is State.CLOSED  # 0 + 1 < 3
    clock.advance(6.0)  # past the lease: b's failure is too old to count
    for _ in range(2):
        with pytest.raises(Boom):
            c.call(fail)
    sync(shares)
    assert c.state is State.CLOSED  # 2 (b's 1 expired)


def test_only_the_owner_probes_and_its_close_closes_the_others(
    shares: list[HostShare], clock: FakeClock
) -> None:
    a, b, c = breakers(shares, clock)
    trip(a)
    sync(shares)
    clock.advance(CONFIG.open_for)  # a's break is over; the others are held past it
    assert a.call(ok) == "ok"  # a half-opens and probes
    assert a.state is State.HALF_OPEN
    sync(shares)  # a renews its lease; b and c stay open
    assert shares[0].rows()["postgres"].state == "half_open"
    for _ in range(3):
        clock.advance(2.0)
        sync(shares)
        for other in (b, c):
            with pytest.raises(BreakerOpen):
                other.call(ok)
    assert a.call(ok) == "ok"  # the second probe closes a
    assert a.state is State.CLOSED
    sync(shares)
    assert b.state is State.CLOSED and c.state is State.CLOSED
    assert b.call(ok) == "ok"
    # the host sent half_open_calls probes, all from a
    assert a.snapshot().total_successes == CONFIG.half_open_calls
    assert b.snapshot().total_successes == 1 and c.snapshot().total_successes == 0


def test_a_dead_owner_is_replaced_by_one_process(shares: list[HostShare], clock: FakeClock) -> None:
    a, b, c = breakers(shares, clock)
    trip(a)
    sync(shares)
    shares[0].close()  # the owner's process dies: nobody renews its row
    clock.advance(CONFIG.open_for + 5.0 + 1.0)  # its break, and the hold's lease, are over
    assert b.call(ok) == "ok"  # b half-opens on its own and claims the row first
    assert b.state is State.HALF_OPEN
    assert shares[1].rows()["postgres"].owner == shares[1].owner
    assert c.state is State.HALF_OPEN  # c's break ended too, but its claim fails ...
    shares[2].sync()
    assert c.state is State.OPEN  # ... so it is held open while b probes
    with pytest.raises(BreakerOpen):
        c.call(ok)


def test_a_probe_that_fails_in_a_process_that_lost_the_claim_does_not_end_the_owners(
    shares: list[HostShare], clock: FakeClock
) -> None:
    """c half-opens on its own while b owns the probing row (c's claim failed); c's
    breaker lets a call through before its poller holds it open, and the call fails.
    The row stays b's: c's own verdict does not force the host open over b's probes,
    and b's close still closes everyone."""
    a, b, c = breakers(shares, clock)
    trip(a)
    sync(shares)
    shares[0].close()
    clock.advance(CONFIG.open_for + 5.0 + 1.0)
    assert b.call(ok) == "ok"  # b claims the row and probes
    assert c.state is State.HALF_OPEN  # its claim failed; not held yet
    with pytest.raises(Boom):
        c.call(fail)
    assert c.state is State.OPEN
    row = shares[1].rows()["postgres"]
    assert (row.state, row.owner) == ("half_open", shares[1].owner)
    sync(shares[1:])
    assert b.state is State.HALF_OPEN  # b goes on probing
    with pytest.raises(BreakerOpen):
        c.call(ok)  # c is held open by b's row
    assert b.call(ok) == "ok"
    assert b.state is State.CLOSED
    sync(shares[1:])
    assert c.state is State.CLOSED


def test_operator_actions_are_shared(shares: list[HostShare], clock: FakeClock) -> None:
    a, b, _ = breakers(shares, clock)
    a.force_open("maintenance")
    sync(shares)
    assert b.state is State.OPEN
    clock.advance(3600.0)
    sync(shares)
    assert b.state is State.OPEN  # a forced open holds until it is reset
    a.reset("maintenance over")
    sync(shares)
    assert b.state is State.CLOSED


def test_an_operator_choice_in_this_process_wins(shares: list[HostShare], clock: FakeClock) -> None:
    a, b, _ = breakers(shares, clock)
    b.disable("debugging here")
    trip(a)
    sync(shares)
    assert b.state is State.DISABLED


def test_a_breaker_that_opens_by_itself_while_held_becomes_the_owner(
    shares: list[HostShare], clock: FakeClock
) -> None:
    a, b, _ = breakers(shares, clock)
    trip(a)
    sync(shares)
    b.reset("operator in b")  # b closes, and says so: the others close too
    sync(shares)
    assert a.state is State.CLOSED
    trip(b)
    sync(shares)
    assert shares[1].rows()["postgres"].owner == shares[1].owner
    assert a.state is State.OPEN


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        HostShare(tmp_path / "x.db", poll_interval=0)
    with pytest.raises(ValueError, match="lease"):
        HostShare(tmp_path / "x.db", poll_interval=1.0, lease=1.5)
    with HostShare(tmp_path / "x.db", poll_interval=None) as share:
        with pytest.raises(TypeError, match="CircuitBreaker"):
            share.attach("postgres")  # type: ignore[arg-type]
        share.attach(CircuitBreaker("db"))
        with pytest.raises(ValueError, match="already attached"):
            share.attach(CircuitBreaker("db"))
    with pytest.raises(RuntimeError, match="closed"):
        share.attach(CircuitBreaker("other"))


def test_detach_stops_sharing(shares: list[HostShare], clock: FakeClock) -> None:
    a, b, _ = breakers(shares, clock)
    detach = shares[1].attach(CircuitBreaker("redis", clock=clock))
    detach()
    assert "redis" not in shares[1].rows()
    trip(a)
    sync(shares)
    assert b.state is State.OPEN


# -- real processes -----------------------------------------------------------------


def _worker(
    path: str, index: int, opened: multiprocessing.Event, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    share = HostShare(path, poll_interval=0.1, lease=2.0)
    breaker = CircuitBreaker("db", config=BreakerConfig(consecutive_failures=3, open_for=60.0))
    share.attach(breaker)
    failures = 0
    if index == 0:
        for _ in range(3):
            try:
                breaker.call(fail)
            except Boom:
                failures += 1
        opened.set()
        out.put((index, failures, 0.0))
    else:
        opened.wait(30)
        started = time.monotonic()

        def rejected() -> bool:
            try:
                breaker.call(ok)
            except BreakerOpen:
                return True
            return False

        try:
            eventually(rejected, timeout=10, interval=0.01, what="the shared open state")
        except AssertionError:
            out.put((index, failures, -1.0))
        else:
            out.put((index, failures, time.monotonic() - started))
    share.close()


def test_real_processes_reject_once_one_of_them_opened(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    opened = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path / "b.db"), i, opened, out)) for i in range(3)
    ]
    for proc in procs:
        proc.start()
    results = sorted(out.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(30)
    assert results[0][:2] == (0, 3)
    for index, failures, took in results[1:]:
        assert failures == 0, index
        assert took >= 0, f"worker {index} never rejected"
