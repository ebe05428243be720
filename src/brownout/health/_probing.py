"""Probing: run the components' health probes on a heartbeat, back off on failures.

A probe result feeds the component's score (the manager reads :meth:`Prober.last_ok`);
a good probe of an open breaker lets it try half-open early, and the probe of a
half-open breaker runs through it as a trial call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from brownout._aio import cancel_and_wait
from brownout._clock import Clock
from brownout._errors import BreakerOpen, HealthProbeFailed
from brownout._redact import redact
from brownout._state import State
from brownout.health._model import Component

__all__ = ["HealthProbeFailed", "Prober"]

logger = logging.getLogger("brownout.health")


@dataclass
class _ProbeState:
    next_at: float = 0.0
    failures: int = 0
    last_ok: bool | None = None
    last_error: str | None = None
    last_at: float | None = None


class Prober:
    """Runs the probes that are due, then calls ``evaluate("heartbeat")``; a task repeats it.

    ``heartbeat``: seconds between two runs of a healthy probe (and between two
    evaluations). A failed probe is retried after ``base * 2**(failures-1)``
    seconds, capped at ``cap`` (``backoff``), with jitter on the upper half.
    """

    def __init__(
        self,
        components: Sequence[Component],
        evaluate: Callable[[str], object],
        *,
        clock: Clock,
        heartbeat: float,
        timeout: float,
        backoff: tuple[float, float],
        rng: random.Random,
    ) -> None:
        self._components = tuple(c for c in components if c.configured and c.probe is not None)
        self._evaluate = evaluate
        self._clock = clock
        self.heartbeat = heartbeat
        self._timeout = timeout
        self._backoff = backoff
        self._rng = rng
        self._states: dict[str, _ProbeState] = {c.name: _ProbeState() for c in components}
        self._task: asyncio.Task[None] | None = None
        self._last_ok: dict[str, bool | None] = dict.fromkeys(self._states)

    def last_ok(self, name: str) -> bool | None:
        """The last probe's outcome, ``None`` if never probed."""
        return self._last_ok[name]

    @property
    def last_ok_map(self) -> Mapping[str, bool | None]:
        """Component -> its last probe's outcome (kept up to date; do not modify)."""
        return self._last_ok

    def state(self, name: str) -> dict[str, Any]:
        state = self._states[name]
        return {
            "ok": state.last_ok,
            "error": state.last_error,
            "failures": state.failures,
            "next_in_s": max(0.0, state.next_at - self._clock()),
        }

    async def tick(self) -> None:
        """Run the probes that are due, then evaluate."""
        now = self._clock()
        due = [c for c in self._components if self._states[c.name].next_at <= now]
        if due:
            await asyncio.gather(*(self._probe(c) for c in due))
        self._evaluate("heartbeat")

    def next_in(self) -> float:
        """Seconds until the next tick is due (at least 50 ms)."""
        now = self._clock()
        dues = [self._states[c.name].next_at - now for c in self._components]
        return max(0.05, min([self.heartbeat, *dues]))

    async def _run_probe(self, c: Component) -> tuple[bool, str | None]:
        """Run ``c``'s probe once: (ok, redacted error)."""
        assert c.probe is not None
        try:
            result: Any = c.probe()
            if inspect.isawaitable(result):
                async with asyncio.timeout(self._timeout):  # see brownout._aio
                    result = await result
            ok = result is None or result is True or bool(getattr(result, "ok", False))
            if not ok:
                return False, getattr(result, "error", None) or "probe returned failure"
        except TimeoutError:
            return False, f"probe timed out after {self._timeout:g} s"
        except Exception as exc:
            return False, redact(f"{type(exc).__name__}: {exc}")
        return True, None

    async def _probe(self, c: Component) -> None:
        state = self._states[c.name]
        ran: list[tuple[bool, str | None]] = []
        if c.breaker is not None and c.breaker.state is State.HALF_OPEN:
            # A half-open component's features are off, so the application may send it
            # no trial call at all: the probe is one (through the breaker), and enough
            # good probes close the breaker, a failed one reopens it.
            async def trial() -> None:
                ran.append(await self._run_probe(c))
                if not ran[-1][0]:
                    raise HealthProbeFailed(f"health probe of {c.name} failed: {ran[-1][1]}")

            with contextlib.suppress(BreakerOpen, HealthProbeFailed):
                await c.breaker.acall(trial)  # BreakerOpen: real calls hold every trial slot
        ok, error = ran[0] if ran else await self._run_probe(c)
        now = self._clock()
        state.last_ok, state.last_error, state.last_at = ok, error, now
        self._last_ok[c.name] = ok
        breaker = c.breaker
        is_open = breaker is not None and breaker.state is State.OPEN
        if ok:
            state.failures = 0
            state.next_at = now + self.heartbeat
            if is_open and breaker is not None:
                breaker.half_open(f"health probe of {c.name} succeeded")
        else:
            state.failures += 1
            base, cap = self._backoff
            delay = min(cap, base * 2 ** (state.failures - 1))
            # full jitter on the upper half: spreads probes of many instances
            state.next_at = now + delay * (0.5 + self._rng.random() / 2)

    # ------------------------------------------------------------------ task

    async def start(self) -> None:
        """Start the heartbeat task (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._run(), name="brownout-degradation-heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                logger.exception("degradation: heartbeat failed")
            await asyncio.sleep(self.next_in())

    async def stop(self) -> None:
        """Stop the heartbeat task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
