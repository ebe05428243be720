"""Issue 14 item 5: the shedder's waiting queue (``Shedder.acquire``) as a Hypothesis state
machine, on an event loop whose clock is fake (so a queue wait runs out when the test
advances the time, never by sleeping).

Requests of the three classes arrive, finish, and the queueing delay changes; checked
after every step against a model of the requests: critical requests are never refused
(they take the reserved slots over ``max_in_flight``, and after waiting
``max_queue_wait`` at most they are served whatever the load); a request
the load allows, with nobody of its class or a more important one waiting, is served at
once; beyond ``max_queued`` waiting a request is refused at once; waiting requests are
admitted most important class first and in arrival order within a class, and none waits
while its slot is free; a waiting request is refused (``overloaded``) only once it has
waited ``max_queue_wait``, and none waits longer; the counts in flight and queued, and
the snapshot's, are the model's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from brownout.web import Criticality, ShedDecision, Shedder

CRITICAL, DEFAULT, SHEDDABLE = Criticality.CRITICAL, Criticality.DEFAULT, Criticality.SHEDDABLE
MAX_IN_FLIGHT = 4
RESERVE = 2  # slots over MAX_IN_FLIGHT only critical requests take
MAX_DELAY = 1.0
WAIT = 1.0
MAX_QUEUED = 5
SHED_AT = {DEFAULT: 1.0, SHEDDABLE: 0.5}


class FakeTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` only moves when told: its timers (``asyncio.wait``'s
    timeout) fire when the test advances it past them."""

    now = 1_000.0

    def time(self) -> float:
        return self.now


@dataclass
class Request:
    n: int
    criticality: Criticality
    arrived: float
    task: asyncio.Task[ShedDecision | None]
    waited: bool = False  # was pending after the step it arrived in
    admitted_at: float | None = None
    released: bool = False
    decision: ShedDecision | None = None


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = FakeTimeLoop()
        self.shedder = Shedder(
            max_in_flight=MAX_IN_FLIGHT,
            critical_reserve=RESERVE,
            max_delay=MAX_DELAY,
            max_queue_wait=WAIT,
            max_queued=MAX_QUEUED,
            clock=self.loop.time,
        )
        self.delay = 0.0
        self.requests: list[Request] = []

    def teardown(self) -> None:
        for r in self.requests:
            r.task.cancel()
        self.step()
        self.loop.close()

    # -- the model ------------------------------------------------------------------

    def in_flight(self) -> list[Request]:
        return [r for r in self.requests if r.admitted_at is not None and not r.released]

    def pending(self) -> list[Request]:
        return [r for r in self.requests if not r.task.done()]

    def reason(self, c: Criticality, in_flight: int) -> str | None:
        """Why the load would make a request of class ``c`` wait now (the shedder's rule)."""
        if c is CRITICAL:
            return "overload" if in_flight >= MAX_IN_FLIGHT + RESERVE else None
        pressure = max(in_flight / MAX_IN_FLIGHT, self.delay / MAX_DELAY)
        return "overload" if pressure >= SHED_AT[c] else None

    def step(self) -> list[Request]:
        """Run the loop until nothing more is ready; the requests resolved meanwhile."""
        before = {r.n for r in self.requests if not r.task.done()}
        for _ in range(6):
            self.loop.run_until_complete(asyncio.sleep(0))
        resolved = []
        for r in self.requests:
            if r.n in before and r.task.done() and not r.task.cancelled():
                resolved.append(r)
                self.settle(r)
        return resolved

    def settle(self, r: Request) -> None:
        r.decision = r.task.result()
        if r.decision is None:
            r.admitted_at = self.loop.now
        else:
            assert r.criticality is not CRITICAL, r.decision  # never refused
            assert r.decision.reason == "overload", r.decision
            assert r.decision.retry_after > 0

    # -- rules ----------------------------------------------------------------------

    @rule(c=st.sampled_from(list(Criticality)))
    def arrive(self, c: Criticality) -> None:
        in_flight = len(self.in_flight())
        waiting = self.pending()
        ahead = any(w.criticality.rank <= c.rank for w in waiting)
        reason = self.reason(c, in_flight)
        task = self.loop.create_task(self.shedder.acquire(c))
        r = Request(len(self.requests), c, self.loop.now, task)
        self.requests.append(r)
        resolved = self.step()
        if reason is None and not ahead:
            assert r in resolved and r.decision is None, "refused or kept waiting with room"
        elif reason is not None and len(waiting) >= MAX_QUEUED:
            # the queue is full: refused at once (a critical one served at once)
            assert r in resolved, "queued beyond max_queued"
            assert (r.decision is None) == (c is CRITICAL)
        if not r.task.done():
            r.waited = True
        self.check_dispatch(resolved)

    @precondition(lambda self: self.in_flight())
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from(self.in_flight()))
        r.released = True
        self.shedder.release(r.criticality)
        self.check_dispatch(self.step())

    @rule(delay=st.sampled_from([0.0, 0.3, 0.6, 1.2]))
    def observe_delay(self, delay: float) -> None:
        self.delay = delay
        self.shedder.observe_delay(delay)
        self.check_dispatch(self.step())

    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 2.0]))
    def advance(self, dt: float) -> None:
        self.loop.now += dt
        resolved = self.step()
        for r in resolved:
            if r.waited:
                # only a wait that ran out resolves on a clock step
                assert self.loop.now - r.arrived >= WAIT, (r, self.loop.now)
        self.check_dispatch([r for r in resolved if self.loop.now - r.arrived < WAIT])

    def check_dispatch(self, resolved: list[Request]) -> None:
        """Those admitted from the queue went in class order, and in arrival order."""
        still = self.pending()
        for r in resolved:
            if not r.waited or r.decision is not None:
                continue
            for w in still:
                assert w.criticality.rank >= r.criticality.rank, (
                    f"{r.criticality} admitted while a {w.criticality} waited"
                )
                if w.criticality is r.criticality:
                    assert w.arrived >= r.arrived, "admitted out of arrival order"

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def nobody_waits_longer_than_the_wait(self) -> None:
        for r in self.pending():
            assert self.loop.now - r.arrived < WAIT, r

    @invariant()
    def nobody_waits_while_their_slot_is_free(self) -> None:
        waiting = self.pending()
        if waiting:
            first = min(waiting, key=lambda w: (w.criticality.rank, w.arrived))
            assert self.reason(first.criticality, len(self.in_flight())) is not None, first

    @invariant()
    def counts_are_the_models(self) -> None:
        snap = self.shedder.snapshot()
        in_flight = self.in_flight()
        assert self.shedder.in_flight == len(in_flight) == snap["in_flight"]
        assert snap["in_flight_by_class"] == {
            c.value: sum(1 for r in in_flight if r.criticality is c) for c in Criticality
        }
        assert self.shedder.queued == len(self.pending()) == snap["queued"]
        assert len(self.pending()) <= MAX_QUEUED
        shed = self.shedder.shed
        refused = [r for r in self.requests if r.decision is not None]
        assert sum(shed.values()) == len(refused)
        assert shed[CRITICAL, "overload"] == shed[CRITICAL, "level"] == 0


QueueMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueMachine = QueueMachine.TestCase
