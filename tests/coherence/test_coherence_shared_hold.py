"""A worker's hold on the cache component ends when another worker of the same VAR_DIR
empties the shared coherence journal (found by tests/fleet: a replica's worker kept
"cache recovering" for good after its sibling reconciled the keys it had recorded)."""

from __future__ import annotations

from pathlib import Path

from brownout.coherence import CacheCoherence
from tests.coherence.test_coherence import FakeRedis


class Manager:
    """What CacheCoherence needs of a DegradationManager: hold and release."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}

    def hold(self, component: str, reason: str) -> None:
        self.held[component] = reason

    def release(self, component: str) -> None:
        self.held.pop(component, None)


def test_a_worker_releases_its_hold_once_another_worker_reconciled(tmp_path: Path) -> None:
    redis = FakeRedis()
    manager_a, manager_b = Manager(), Manager()
    a = CacheCoherence(redis, tmp_path / "coherence.db", manager=manager_a, shared=True)
    b = CacheCoherence(redis, tmp_path / "coherence.db", manager=manager_b, shared=True)
    try:
        redis.down = True
        assert a.invalidate("product:1") is False
        assert "cache" in manager_a.held  # a's cached reads stop
        assert not b.reads_allowed()
        redis.down = False
        assert b.reconcile().deleted == 1
        assert manager_b.held == {}
        # a's next look at the journal (a request's reads_allowed) sees it empty: its
        # hold must go too, else its cached reads stay off with nothing left to reconcile
        assert a.reads_allowed()
        assert manager_a.held == {}
    finally:
        a.close()
        b.close()
