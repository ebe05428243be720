"""AdapterStats folds its log into exactly the figures of a record-by-record reference."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brownout._adapter_stats import (
    BYTES_RECEIVED,
    BYTES_SENT,
    CACHE_HITS,
    CACHE_MISSES,
    COMPLETION_TOKENS,
    DURATION,
    ERROR,
    ERROR_KIND,
    EVENT_FIELDS,
    KEY,
    MODEL,
    OPERATION,
    OUTCOME,
    PROMPT_TOKENS,
    STAMP,
    WALL,
    AdapterStats,
    Figures,
    OperationEvent,
    record_of,
)
from brownout._histogram import add_batch, empty
from brownout.testing import FakeClock

SAMPLES = 16

events = st.builds(
    OperationEvent,
    dependency=st.just("redis"),
    name=st.just("r"),
    operation=st.sampled_from(["get", "set", "mget"]),
    outcome=st.sampled_from(["success", "success", "failure", "caller_error", "rejected"]),
    duration=st.floats(min_value=0.0, max_value=3.0),
    error_kind=st.sampled_from([None, "timeout", "connection"]),
    key=st.sampled_from([None, "k1", "k2"]),
    bytes_sent=st.integers(0, 100),
    bytes_received=st.integers(0, 100),
    cache_hits=st.integers(0, 2),
    cache_misses=st.integers(0, 2),
    model=st.sampled_from([None, "", "m1", "m2"]),
    prompt_tokens=st.integers(0, 5),
    completion_tokens=st.integers(0, 5),
)
# (event, error text, read the figures after it)
steps = st.lists(
    st.tuples(events, st.sampled_from([None, None, "boom 1", "boom 2"]), st.booleans()),
    max_size=60,
)


def reference(made: list[tuple[OperationEvent, str | None, float]]) -> dict[str, Any]:
    """The figures, record by record, as the fold's first version counted them."""
    operations: dict[str, dict[str, int]] = {}
    durations: dict[str, list[float]] = {}
    outcomes: deque[bool] = deque(maxlen=SAMPLES)
    latencies: deque[float] = deque(maxlen=SAMPLES)
    stamps: deque[float] = deque(maxlen=SAMPLES)
    errors: dict[str, int] = {}
    totals: dict[str, int] = {}
    tokens: dict[str, dict[str, int]] = {}
    last_error = None
    for event, error, stamp in made:
        per_op = operations.setdefault(event.operation, {})
        per_op[event.outcome] = per_op.get(event.outcome, 0) + 1
        if event.outcome != "rejected":
            durations.setdefault(event.operation, []).append(event.duration)
            if event.outcome in ("success", "failure"):
                outcomes.append(event.outcome == "success")
                latencies.append(event.duration)
                stamps.append(stamp)
                if event.error_kind is not None and event.outcome == "failure":
                    errors[event.error_kind] = errors.get(event.error_kind, 0) + 1
        if error is not None:
            last_error = error
        for name in (
            "bytes_sent",
            "bytes_received",
            "cache_hits",
            "cache_misses",
            "prompt_tokens",
            "completion_tokens",
        ):
            value = getattr(event, name)
            if value:
                totals[name] = totals.get(name, 0) + value
        if event.model and (event.prompt_tokens or event.completion_tokens):
            per_model = tokens.setdefault(event.model, {"prompt": 0, "completion": 0})
            per_model["prompt"] += event.prompt_tokens
            per_model["completion"] += event.completion_tokens
    return {
        "operations": operations,
        "durations": durations,
        "outcomes": list(outcomes),
        "latencies": list(latencies),
        "stamps": list(stamps),
        "errors": errors,
        "totals": totals,
        "tokens": tokens,
        "last_error": last_error,
    }


@settings(max_examples=300, deadline=None)
@given(steps=steps, drain_after=st.integers(0, 7))
def test_the_fold_counts_like_the_reference(
    steps: list[tuple[OperationEvent, str | None, bool]], drain_after: int
) -> None:
    clock = FakeClock()
    stats = AdapterStats(latency_samples=SAMPLES, recent_size=5, horizon=1e9, clock=clock)
    stats.drain_after = drain_after
    made = []
    for event, error, read in steps:
        clock.advance(0.001)
        stats.add(event, error)
        made.append((event, error, clock()))
        if read:
            stats.totals  # noqa: B018 (a read folds the pending records in)
    want = reference(made)
    figures = stats.metrics()
    assert figures.operations == want["operations"]
    assert figures.errors == want["errors"]
    assert figures.totals == want["totals"]
    assert figures.tokens_by_model == want["tokens"]
    assert set(figures.durations) == set(want["durations"])
    for operation, values in want["durations"].items():
        timed = figures.durations[operation]
        buckets = empty()
        add_batch(buckets, list(values))
        assert (timed.count, timed.buckets) == (len(values), buckets)
        assert timed.sum == pytest.approx(math.fsum(values))
    assert list(stats.outcomes) == want["outcomes"]
    assert list(stats.latencies) == want["latencies"]
    assert list(stats.stamps) == want["stamps"]
    assert stats.last_error == want["last_error"]
    assert (stats.last_error_at is None) == (want["last_error"] is None)
    recent = list(stats.recent)
    assert [(r["operation"], r["outcome"]) for r in recent] == [
        (e.operation, e.outcome) for e, _, _ in made[-5:]
    ]


def test_a_record_has_its_fields_where_the_names_say() -> None:
    figs = Figures("k", 1, 2, 3, 4, "m", 5, 6)
    record = record_of("get", "failure", 0.5, "timeout", figs, 7.0, 8.0, "boom")
    named = {
        OPERATION: "get",
        OUTCOME: "failure",
        DURATION: 0.5,
        ERROR_KIND: "timeout",
        KEY: "k",
        BYTES_SENT: 1,
        BYTES_RECEIVED: 2,
        CACHE_HITS: 3,
        CACHE_MISSES: 4,
        MODEL: "m",
        PROMPT_TOKENS: 5,
        COMPLETION_TOKENS: 6,
        STAMP: 7.0,
        WALL: 8.0,
        ERROR: "boom",
    }
    assert sorted(named) == list(range(len(record)))
    assert all(record[index] == value for index, value in named.items())
    event = OperationEvent("redis", "r", *record[:EVENT_FIELDS])
    assert event == OperationEvent(
        "redis", "r", "get", "failure", 0.5, "timeout", "k", 1, 2, 3, 4, "m", 5, 6
    )
