"""Issue 14 item 2: Gradient2 against a real Redis behind the fault proxy.

32 coroutines hammer an AsyncRedisAdapter whose bulkhead has an adaptive limit.
When the proxy adds 100 ms to every answer the limit shrinks (callers beyond it
fail fast with BulkheadFull instead of piling up), the p99 of the calls stays
bounded, and when the latency goes the limit grows again. No timed assertion
beyond generous bounds; the figures are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import time

from brownout import BreakerConfig
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.overload import Bulkhead, BulkheadFull, Gradient2
from brownout.redis import AsyncRedisAdapter

WORKERS = 32
SLOW = 0.1  # seconds the proxy adds to every answer


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def test_the_adaptive_limit_follows_redis_latency(redis_proxy: ThreadedFaultProxy) -> None:
    policy = Gradient2(initial_limit=20, window=0.1, min_samples=5)
    bulkhead = Bulkhead("redis", limit=policy, max_wait=0.05)
    adapter = AsyncRedisAdapter.from_url(
        f"redis://{redis_proxy.host}:{redis_proxy.port}",
        bulkhead=bulkhead,
        socket_timeout=5.0,
        max_connections=WORKERS + 4,
        config=BreakerConfig(consecutive_failures=10_000, failure_rate=None),
    )
    phase = "normal"
    latencies: dict[str, list[float]] = {"normal": [], "slow": [], "recovered": []}
    rejected: dict[str, int] = dict.fromkeys(latencies, 0)
    limits: dict[str, list[int]] = {k: [] for k in latencies}
    # calls in flight to Redis (permits held) and callers queued, sampled with the limit
    in_use: dict[str, list[int]] = {k: [] for k in latencies}
    waiting: dict[str, list[int]] = {k: [] for k in latencies}
    stop = False

    async def worker(i: int) -> None:
        while not stop:
            started = time.perf_counter()
            try:
                await adapter.get(f"adaptive-{i}")
            except BulkheadFull:
                rejected[phase] += 1
                await asyncio.sleep(0.005)  # a caller told to back off does
                continue
            latencies[phase].append(time.perf_counter() - started)

    async def watch(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            snap = bulkhead.snapshot()
            limits[phase].append(snap.limit)
            in_use[phase].append(snap.in_use)
            waiting[phase].append(snap.waiting)
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(worker(i)) for i in range(WORKERS)]
    try:
        await watch(1.5)
        phase = "slow"
        redis_proxy.set_mode(Mode.LATENCY, downstream_delay=SLOW)
        await watch(4.0)
        phase = "recovered"
        redis_proxy.set_mode(Mode.PASS)
        await watch(4.0)
    finally:
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        redis_proxy.set_mode(Mode.PASS)
        await adapter.aclose()

    normal_limit = max(limits["normal"])
    slow_floor = min(limits["slow"])
    slow_end = limits["slow"][-1]
    recovered_end = limits["recovered"][-1]
    figures = {
        k: (len(latencies[k]), rejected[k], round(p99(latencies[k]) * 1000, 1), limits[k][-1])
        for k in latencies
    }
    print(f"\nadaptive limit vs Redis latency (calls, rejected, p99 ms, final limit): {figures}")
    print(f"limit: normal max {normal_limit}, slow min {slow_floor}, end {recovered_end}")
    print(
        f"in flight: normal max {max(in_use['normal'])}, slow last second max "
        f"{max(in_use['slow'][-20:])}; waiting max {max(waiting['slow'])}"
    )
    # the limit shrank while Redis was slow: fewer calls piled up on it
    assert slow_floor < normal_limit
    # and converged: over the slow phase's last second (20 samples) it stays at or near
    # Gradient2's floor of 2 * queue_size (8), it does not swing back up
    assert max(limits["slow"][-20:]) <= 12, limits["slow"][-20:]
    # what bounds the latency: of the 32 callers at most the limit are on Redis at once
    # (permits held; a lowered limit admits nobody until enough calls finished), and at
    # most the limit queue for a permit (max_waiting follows the limit), for max_wait
    assert max(in_use["slow"][-20:]) <= 12, in_use["slow"][-20:]
    assert max(waiting["slow"][-20:]) <= 12, waiting["slow"][-20:]
    assert max(in_use["normal"]) > 12  # (not so before: the limit, not the load, bounds it)
    # callers beyond the limit were told at once (or after max_wait), not queued behind it
    assert rejected["slow"] > 0
    # p99 bounded: the latency plus the bounded wait, not a pile-up (generous bound)
    assert p99(latencies["slow"]) < 1.0
    # and it recovers: once the latency is gone the limit at least doubles from its floor
    # within the 4 s (it grows ~0.8 a 0.1 s window), and calls answer in less than the
    # latency that was added (every call of the slow phase took at least that)
    assert max(limits["recovered"]) >= 2 * slow_end, limits["recovered"]
    assert recovered_end > slow_end
    fast = sum(1 for v in latencies["recovered"] if v < SLOW) / len(latencies["recovered"])
    assert fast >= 0.9, fast  # (the calls in flight at the switch still took SLOW)
