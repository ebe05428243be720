"""The benchmarks' shared harness and A/B tool (bench/_harness.py, bench/worktree_ab.py):
what they promise, without timing anything."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from bench import _harness as h
from bench import worktree_ab


def test_run_interleaved_freezes_the_set_up_for_the_run_only() -> None:
    frozen: list[int] = []

    def run(n: int) -> int:
        frozen.append(gc.get_freeze_count())
        return n * 10

    cells = [h.Cell("s", "a", run), h.Cell("s", "b", run)]
    assert gc.get_freeze_count() == 0
    h.run_interleaved(cells, rounds=3, batch=5, warmup=1)
    assert len(frozen) == 8 and min(frozen) > 0  # every batch ran with the set-up frozen
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    assert [c.samples for c in cells] == [[10.0] * 3, [10.0] * 3]


def test_run_interleaved_unfreezes_when_a_cell_fails() -> None:
    def run(n: int) -> int:
        raise RuntimeError("cell broke")

    with pytest.raises(RuntimeError, match="cell broke"):
        h.run_interleaved([h.Cell("s", "a", run)], rounds=1, batch=1, warmup=0)
    assert gc.get_freeze_count() == 0 and gc.isenabled()


class Rejection(Exception):
    pass


def test_traceback_cleared_clears_the_reused_exception_after_each_batch() -> None:
    state = Rejection()  # as purgatory's open state: one exception object, raised again

    def reject() -> Any:
        raise state

    def run(n: int) -> int:
        for _ in range(n):
            try:
                reject()
            except Rejection:
                pass
        assert state.__traceback__ is not None  # the frames pile up during a batch
        return n

    runner = h.traceback_cleared(run, reject)
    assert runner(100) == 100
    assert state.__traceback__ is None


def test_traceback_cleared_refuses_a_breaker_that_does_not_reject() -> None:
    with pytest.raises(RuntimeError, match="did not reject"):
        h.traceback_cleared(lambda n: n, lambda: None)


def test_worktree_ab_takes_one_figure_per_cell_from_a_runs_json() -> None:
    data = {
        "cells": [
            {
                "scenario": "1. Redis GET",
                "label": "raw",
                "ns_per_op": [5.0, 1.0, 3.0],
                "paired_ratio": [1.0, 1.0, 1.0],
                "cpu_ns_per_op": [2.0, 4.0, 9.0],
            },
            {"scenario": "2. x", "label": "bare", "median_ns": 42},
            {"scenario": "3. y", "label": "n/a", "n/a": "no asyncio API"},
        ],
        "own_cost": [{"operation": "GET", "label": "fake", "ns_per_op": [7.0, 8.0, 100.0]}],
    }
    assert worktree_ab.figures(data) == {
        ("1. Redis GET (paired ratio)", "raw"): 1.0,
        ("1. Redis GET (CPU ns/op)", "raw"): 4.0,
        ("2. x (ns/op)", "bare"): 42.0,
        ("GET (ns/op)", "fake"): 8.0,
    }


def test_run_interleaved_alternates_the_order_when_asked() -> None:
    order: list[str] = []

    def runner(label: str) -> h.BatchRunner:
        def run(n: int) -> int:
            order.append(label)
            return n

        return run

    cells = [h.Cell("s", label, runner(label)) for label in ("base", "new")]
    h.run_interleaved(cells, rounds=3, batch=1, warmup=1, alternate=True)
    assert order == ["base", "new", "new", "base", "base", "new", "new", "base"]
    order.clear()
    h.run_interleaved(cells, rounds=1, batch=1, warmup=1)
    assert order == ["base", "new", "base", "new"]
