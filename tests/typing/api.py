"""Type-checked by mypy (make typecheck), never run: the public API keeps signatures."""

from __future__ import annotations

from typing import assert_type

from brownout import BreakerConfig, BreakerOpen, BreakerSnapshot, CircuitBreaker, Registry, State

cb = CircuitBreaker("redis", BreakerConfig(consecutive_failures=5, open_for=20.0))


@cb
def fetch(sku: str) -> bytes:
    return sku.encode()


@cb
async def afetch(sku: str, *, retries: int = 1) -> bytes:
    return sku.encode() * retries


async def use() -> None:
    assert_type(fetch("a"), bytes)
    assert_type(await afetch("a", retries=2), bytes)
    assert_type(cb.call(fetch, "a"), bytes)
    assert_type(await cb.acall(afetch, "a"), bytes)
    assert_type(cb.state, State)
    assert_type(cb.snapshot(), BreakerSnapshot)
    assert_type(Registry.with_defaults().get("redis"), CircuitBreaker)
    try:
        cb.call(fetch, "x")
    except BreakerOpen as e:
        assert_type(e.retry_after, float | None)
    with cb:
        pass
    async with cb:
        pass


def errors_and_version() -> None:
    import brownout
    from brownout import BrownoutError
    from brownout.outbox import OutboxFull
    from brownout.spool import SpoolFull

    assert_type(brownout.__version__, str)
    try:
        pass
    except OutboxFull as e:
        assert_type(e.retry_after, float)
        base: BrownoutError = e  # every library error is a BrownoutError
        assert_type(base, BrownoutError)
    except SpoolFull as e:
        assert_type(e.retry_after, float)


def listener_shapes() -> None:
    from collections.abc import Callable

    from brownout import CallEvent, StateChange
    from brownout.health import Component, DegradationManager, Evaluation
    from brownout.prometheus import PrometheusMetrics

    def on_change(event: StateChange) -> None: ...

    def on_call(event: CallEvent) -> None: ...

    def on_evaluation(evaluation: Evaluation) -> None: ...

    registry = Registry()
    assert_type(cb.add_listener(on_state_change=on_change), Callable[[], None])
    assert_type(
        registry.add_listener(on_state_change=on_change, on_call=on_call), Callable[[], None]
    )
    manager = DegradationManager([Component("database")])
    assert_type(manager.add_listener(on_evaluation), Callable[[], None])
    metrics = PrometheusMetrics()
    assert_type(metrics.attach(registry), Callable[[], None])
    assert_type(metrics.attach(cb), Callable[[], None])
    assert_type(metrics.attach(manager), Callable[[], None])
