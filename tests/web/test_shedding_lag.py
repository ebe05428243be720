"""Issue 14 item 5: the queueing delay the middleware measures (the event loop's lag, the
smallest of the last ``delay_window``), on an event loop with a fake clock: the lag of each
sample is exactly what the test adds to the clock, so a stall and a standing delay are
told apart without sleeping (``tests/web/test_shedding.py`` shows the same on the real
loop, with real stalls)."""

from __future__ import annotations

import asyncio

import pytest

from brownout.web import Criticality, RouteCriticality, Shedder, SheddingMiddleware
from tests.web.test_shedding import Held, call
from tests.web.test_shedding_queue_machine import FakeTimeLoop

INTERVAL = 0.01


def test_one_stall_sheds_nothing_a_standing_delay_does_and_its_end_is_seen_at_once() -> None:
    loop = FakeTimeLoop()
    shedder = Shedder(max_in_flight=100, max_delay=0.04)
    inner = Held()
    inner.release.set()
    app = SheddingMiddleware(
        inner,
        shedder,
        RouteCriticality({}),
        lag_interval=INTERVAL,
        delay_window=5 * INTERVAL,
        idle_after=3600.0,
    )

    def step() -> None:
        for _ in range(4):
            loop.run_until_complete(asyncio.sleep(0))

    def tick(lag: float) -> float:
        """One sampling interval during which the loop ran ``lag`` seconds late."""
        loop.now += INTERVAL + lag
        step()
        return shedder.delay

    try:
        status, _, _ = loop.run_until_complete(call(app, "GET", "/x"))  # starts the sampler
        assert status == 200
        step()  # the sampler waits for its first interval
        assert tick(0.0) == 0.0
        # one stall of 200 ms: in the window, but not its smallest lag
        assert tick(0.2) == 0.0
        for _ in range(4):
            assert tick(0.0) == 0.0
        # a standing delay: every interval 30 ms late; seen once it fills the window
        for _ in range(4):
            assert tick(0.03) == 0.0
        assert shedder.admit(Criticality.SHEDDABLE) is None
        shedder.release(Criticality.SHEDDABLE)
        assert tick(0.03) == pytest.approx(0.03)
        refused = shedder.admit(Criticality.SHEDDABLE)  # 0.03 of 0.04: pressure 0.75
        assert refused is not None and refused.reason == "overload"
        assert "30 ms queueing delay" in refused.detail
        assert shedder.admit(Criticality.DEFAULT) is None  # default goes from 1.0
        shedder.release(Criticality.DEFAULT)
        assert tick(0.05) == pytest.approx(0.03)  # the smallest of the window
        assert tick(0.05) == pytest.approx(0.03)
        # the delay ends: the next sample on time ends the shedding at once
        assert tick(0.0) == 0.0
        assert shedder.admit(Criticality.SHEDDABLE) is None
        shedder.release(Criticality.SHEDDABLE)
    finally:
        loop.run_until_complete(app.aclose())
        loop.close()
