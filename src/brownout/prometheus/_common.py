"""Pieces shared by the metric groups of :mod:`brownout.prometheus`."""

from __future__ import annotations

__all__ = ["DURATION_BUCKETS", "full_name"]

#: Histogram buckets (seconds) for calls to a dependency: 0.5 ms to 10 s.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def full_name(namespace: str, name: str) -> str:
    """``namespace_name`` as prometheus_client joins them (just ``name`` without a namespace)."""
    return f"{namespace}_{name}" if namespace else name
