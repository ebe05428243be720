"""The manager's listeners: who hears about each :class:`Evaluation`, and how.

A listener gets every evaluation, outside the manager's lock, after the level
change (if any) is logged. One that raises is logged and never stops the others;
one that returns an awaitable (an async listener) has it scheduled on the
running loop, else on the loop the manager was started on, else it is skipped
with a warning. :meth:`Listeners.aclose` waits for the scheduled ones.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from brownout._aio import cancel_and_wait
from brownout.health._events import Evaluation, Transition
from brownout.health._model import Level

__all__ = ["Listener", "Listeners", "OnTransition", "TransitionHandler"]

logger = logging.getLogger("brownout.health")

#: A listener: gets every :class:`Evaluation`; may be async (its awaitable is scheduled).
Listener = Callable[[Evaluation], object]
TransitionHandler = Callable[[Transition], object]


class OnTransition:
    """``on_transition``'s handler as a listener: only evaluations that changed the level."""

    __slots__ = ("handler", "level")

    def __init__(self, handler: TransitionHandler, level: Level | None) -> None:
        self.handler = handler
        self.level = level

    def __call__(self, evaluation: Evaluation) -> object:
        transition = evaluation.transition
        if transition is None or (self.level is not None and transition.to_level is not self.level):
            return None
        return self.handler(transition)

    def __repr__(self) -> str:
        return repr(self.handler)


class Listeners:
    """The listeners of one manager and the tasks of the async ones still running."""

    __slots__ = ("_background", "_listeners", "loop")

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._background: set[asyncio.Task[Any]] = set()
        #: the loop the manager was started on: async listeners of other threads go there
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, callback: Listener) -> Callable[[], None]:
        if not callable(callback):
            raise TypeError("add_listener needs a callable taking an Evaluation")
        self._listeners = (*self._listeners, callback)

        def unsubscribe() -> None:
            self._listeners = tuple(f for f in self._listeners if f is not callback)

        return unsubscribe

    def publish(self, evaluation: Evaluation) -> None:
        """Log the level change (if any), then call every listener."""
        transition = evaluation.transition
        if transition is not None:
            log = logger.warning if transition.to_level > transition.from_level else logger.info
            log(
                "degradation level %s -> %s (score %.1f): %s",
                transition.from_level.name,
                transition.to_level.name,
                transition.score,
                transition.reason,
            )
        for listener in self._listeners:
            try:
                result = listener(evaluation)
            except Exception:
                logger.exception("degradation: listener %r raised", listener)
                continue
            if inspect.isawaitable(result):
                self._schedule(result, listener)

    def _schedule(self, awaitable: Awaitable[Any], listener: object) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except Exception:
                logger.exception("degradation: listener %r raised", listener)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task = loop.create_task(guarded())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif self.loop is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(guarded(), self.loop)
        else:
            coro = guarded()
            coro.close()
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            logger.warning(
                "degradation: async listener %r skipped: no running event loop", listener
            )

    async def aclose(self) -> None:
        """Cancel the async listeners still running and wait for them to end."""
        loop = asyncio.get_running_loop()
        for task in list(self._background):
            if task.get_loop() is loop:
                await cancel_and_wait(task)
            else:  # scheduled on another loop: that loop ends it
                task.get_loop().call_soon_threadsafe(task.cancel)
