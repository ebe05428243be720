"""Pieces shared by the metric groups of :mod:`brownout.prometheus`."""

from __future__ import annotations

from brownout._histogram import DURATION_BUCKETS as _BUCKETS

__all__ = ["DURATION_BUCKETS", "full_name"]

#: Histogram buckets (seconds) for calls to a dependency: 0.5 ms to 10 s. The breakers and
#: adapters count into these in their own state (``brownout._histogram``).
DURATION_BUCKETS: tuple[float, ...] = _BUCKETS


def full_name(namespace: str, name: str) -> str:
    """``namespace_name`` as prometheus_client joins them (just ``name`` without a namespace)."""
    return f"{namespace}_{name}" if namespace else name
