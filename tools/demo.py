"""The demo (``make demo``, ``python -m tools.demo``): a full local stack, a realistic
request mix and a fault timeline.

It runs from a checkout, not from the installed service (see ``pyproject.toml``). The
stack is built by :mod:`tools.stack` (the builder the benchmarks and tests use too):
private servers on free loopback ports (:mod:`brownout.testing.servers`), ``redis-server``,
a PostgreSQL cluster, moto's S3 and an OpenAI-compatible stub, each behind a
:class:`brownout.chaos.ThreadedFaultProxy`; the service runs in a child process
(``python -m inventario serve``) configured to reach every dependency through its proxy,
with short heartbeat and recovery dwell so the timeline is quick. A client drives a
request mix (product reads, lists and searches, stock movements and product updates with
``Idempotency-Key``, price suggestions, invoice uploads when the service has them) while
the timeline plays:

1. baseline                             => OPTIMAL
2. Redis down                           => DEGRADED (reads served by PostgreSQL)
3. Redis back, OpenAI answers 429       => LIMITED (prices from the rule)
4. OpenAI back, the database down       => MINIMAL (writes answered 202 into the outbox)
5. everything back                      => OPTIMAL, the outbox replayed

It prints a progress line every second and a summary at the end; the exit status is 0
only when every phase reached its level and every accepted write is in the database.
Whatever cannot be started (a missing binary or package) is named, and the phases that
need it are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from brownout.chaos import Mode
from brownout.testing.servers import OpenAIStub, PostgresServer
from brownout.testing.servers.openai_stub import example_from_schema
from tools.stack import DATABASE, Stack

__all__ = ["DemoOptions", "DemoStack", "main", "run_demo"]

LEVELS = ("OPTIMAL", "DEGRADED", "LIMITED", "MINIMAL", "EMERGENCY")
PRODUCTS = 16
CATEGORIES = ("tools", "garden", "kitchen", "office")
INITIAL_STOCK = 100_000

#: Request kinds and their share of the mix.
MIX: tuple[tuple[str, float], ...] = (
    ("read", 0.36),
    ("list", 0.08),
    ("search", 0.05),
    ("history", 0.03),
    ("report", 0.02),
    ("move", 0.20),
    ("update", 0.08),
    ("price", 0.14),
    ("invoice", 0.04),
)


@dataclass(frozen=True)
class DemoOptions:
    """How long and how hard the demo runs."""

    quick: bool = False
    rate: float = 25.0  # requests per second
    concurrency: int = 12
    summary_json: Path | None = None

    @property
    def hold(self) -> float:
        """Seconds of traffic at each phase's level once it is reached."""
        return 3.0 if self.quick else 15.0

    @property
    def dwell(self) -> float:
        return 1.5 if self.quick else 5.0

    @property
    def reach_timeout(self) -> float:
        return 20.0 if self.quick else 45.0

    @property
    def settle_timeout(self) -> float:
        return 25.0 if self.quick else 90.0

    @property
    def recovery_timeout(self) -> float:
        return 45.0 if self.quick else 120.0

    @property
    def retry_after(self) -> int:
        """The ``Retry-After`` the OpenAI stub sends with its 429s."""
        return 2 if self.quick else 8


# --------------------------------------------------------------------------- the stack


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


class DemoStack(Stack):
    """The stack of :mod:`tools.stack` with the demo's faults and its final check."""

    def __init__(self, options: DemoOptions, out: TextIO) -> None:
        super().__init__(
            out,
            settings={"heartbeat": 0.5, "recovery_dwell": options.dwell},
            ai_answer=_ai_answer,
        )
        self.options = options

    # -- faults --------------------------------------------------------------------
    def redis_down(self) -> None:
        dep = self.deps["redis"]
        if self.options.quick:
            assert dep.proxy is not None
            dep.proxy.set_mode(Mode.REFUSE)
        else:
            dep.server.pause()  # SIGSTOP: connections hang, nothing answers

    def redis_back(self) -> None:
        dep = self.deps["redis"]
        assert dep.proxy is not None
        dep.server.resume()
        dep.proxy.set_mode(Mode.PASS)

    def openai_429(self) -> None:
        stub: OpenAIStub = self.deps["openai"].server
        stub.script(429, headers={"retry-after": str(self.options.retry_after)}, times=None)

    def openai_back(self) -> None:
        stub: OpenAIStub = self.deps["openai"].server
        stub.reset()
        stub.default_content = _ai_answer

    def database_down(self) -> None:
        dep = self.deps["database"]
        assert dep.proxy is not None
        if self.options.quick:
            dep.proxy.set_mode(Mode.REFUSE)
        else:
            dep.server.stop()  # a real shutdown; the proxy resets what reaches it

    def database_back(self) -> None:
        dep = self.deps["database"]
        assert dep.proxy is not None
        dep.server.ensure_running()
        dep.proxy.set_mode(Mode.PASS)

    # -- checks --------------------------------------------------------------------

    def applied(self, prefix: str) -> tuple[set[str], dict[str, tuple[str, int]]]:
        """What the database holds for the keys starting with ``prefix``.

        Returns the idempotency keys recorded (each with its effect, in one transaction)
        and, for stock movements, ``key -> (sku, delta)`` of the movement row the key's
        recorded answer points to.
        """
        like = prefix.replace("'", "''") + "%"
        keys_sql = f"SELECT key FROM idempotency WHERE key LIKE '{like}'"
        db = self.deps["database"]
        if db.available:
            server: PostgresServer = db.server
            server.ensure_running()
            moves_sql = (
                "SELECT i.key, m.sku, m.delta FROM idempotency i JOIN movements m "
                "ON m.id = CAST(i.response::json->>'id' AS integer) "
                f"WHERE i.key LIKE '{like}' AND i.operation = 'stock.move'"
            )
            keys = set(server.psql(keys_sql, dbname=DATABASE).split())
            rows = [
                line.split("|") for line in server.psql(moves_sql, dbname=DATABASE).splitlines()
            ]
        else:
            assert self.service is not None
            moves_sql = (
                "SELECT i.key, m.sku, m.delta FROM idempotency i JOIN movements m "
                "ON m.id = CAST(json_extract(i.response, '$.id') AS INTEGER) "
                f"WHERE i.key LIKE '{like}' AND i.operation = 'stock.move'"
            )
            path = self.service.var_dir / "inventario.db"
            with contextlib.closing(sqlite3.connect(path)) as conn:
                keys = {str(row[0]) for row in conn.execute(keys_sql)}
                rows = [[str(v) for v in row] for row in conn.execute(moves_sql)]
        moves = {row[0]: (row[1], int(row[2])) for row in rows if len(row) == 3}
        return keys, moves


def _ai_answer(payload: dict[str, Any]) -> Any:
    """The stub's answer: a price 4 % over the rule's, or a minimal schema-shaped reply."""
    fmt = payload.get("response_format")
    spec = (fmt.get("json_schema") or {}) if isinstance(fmt, dict) else {}
    if isinstance(spec, dict) and spec.get("name") != "price_suggestion":
        return example_from_schema(spec.get("schema"))
    match = re.search(r"rule-based price would be ([0-9]+(?:\.[0-9]+)?)", json.dumps(payload))
    rule = float(match.group(1)) if match else 10.0
    return {"price": round(rule * 1.04, 2), "rationale": "demo stub: 4% over the rule price"}


# --------------------------------------------------------------------------- the timeline


@dataclass
class Phase:
    """One step of the timeline: inject a fault, reach a level, hold, clear, settle."""

    name: str
    expected: str
    needs: tuple[str, ...] = ()
    inject: Callable[[], None] | None = None
    clear: Callable[[], None] | None = None
    settle: str | None = None  # component that must be up again before the next phase
    skipped: str | None = None
    started: float = 0.0
    ended: float = 0.0
    reached_after: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.skipped is not None or self.reached_after is not None


@dataclass(frozen=True)
class Sample:
    phase: int
    kind: str
    outcome: str  # ok | degraded | failed
    status: int  # 0: no answer
    latency: float
    level: str | None


@dataclass(frozen=True)
class WriteRecord:
    key: str
    operation: str
    status: int  # 0: no answer
    phase: int
    sku: str = ""
    delta: int = 0  # stock movements: the expected change of stock


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _outcomes(samples: Iterable[Sample]) -> dict[str, int]:
    """How many of ``samples`` were ok, degraded and failed."""
    counts = {"ok": 0, "degraded": 0, "failed": 0}
    for s in samples:
        counts[s.outcome] += 1
    return counts


def classify(kind: str, response: httpx.Response) -> str:
    """ok: the full answer; degraded: queued, a fallback or a refusal with Retry-After."""
    status = response.status_code
    if status == 202:
        return "degraded"
    if 200 <= status < 300:
        if kind == "price":
            with contextlib.suppress(ValueError, AttributeError):
                if response.json().get("source") != "ai":
                    return "degraded"
        return "ok"
    if status in (503, 507) and "retry-after" in response.headers:
        return "degraded"
    return "failed"


class Demo:
    """Drives the traffic, watches the service and plays the timeline."""

    def __init__(self, stack: DemoStack, options: DemoOptions, out: TextIO) -> None:
        self.stack = stack
        self.options = options
        self.out = out
        assert stack.service is not None
        self.url = stack.service.url
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"demo-{self.run_id}-"
        self.skus = [f"DEMO-{i:03d}" for i in range(1, PRODUCTS + 1)]
        self.phases: list[Phase] = []
        self.phase_index = 0
        self.samples: list[Sample] = []
        self.writes: list[WriteRecord] = []
        self.levels: list[tuple[float, str, float]] = []  # (t, level, score) from /health
        self.level = "?"
        self.score = 0.0
        self.components: dict[str, dict[str, Any]] = {}
        self.outbox: dict[str, Any] = {}
        self.transitions: list[dict[str, Any]] = []
        self.invoices = False  # the service has POST /invoices (an optional router)
        self.t0 = time.monotonic()
        self._counter = 0
        self._rng_state = 0x5EED
        self._stop_traffic = asyncio.Event()
        self._stop_watch = asyncio.Event()

    # -- helpers -------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _rand(self) -> float:
        # a small deterministic LCG: the mix is the same from run to run
        self._rng_state = (self._rng_state * 6364136223846793005 + 1442695040888963407) % 2**64
        return (self._rng_state >> 11) / 2**53

    def _pick(self, seq: Sequence[str]) -> str:
        return seq[int(self._rand() * len(seq)) % len(seq)]

    def _key(self, what: str) -> str:
        self._counter += 1
        return f"{self.prefix}{what}-{self._counter}"

    # -- set-up --------------------------------------------------------------------

    async def seed(self, client: httpx.AsyncClient) -> None:
        for i, sku in enumerate(self.skus):
            cost = 2.0 + 1.5 * i
            body = {
                "sku": sku,
                "name": f"Demo product {i + 1}",
                "category": CATEGORIES[i % len(CATEGORIES)],
                "price": f"{cost * 1.6:.2f}",
                "cost": f"{cost:.2f}",
                "stock": INITIAL_STOCK,
                "min_stock": 10 if i % 5 else INITIAL_STOCK * 2,  # some show up as low stock
            }
            key = self._key("create")
            r = await client.post("/products", json=body, headers={"Idempotency-Key": key})
            if r.status_code not in (200, 201, 202):
                raise RuntimeError(f"creating {sku} failed: {r.status_code} {r.text[:300]}")
            self.writes.append(WriteRecord(key, "product.create", r.status_code, 0, sku))
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            spec = (await client.get("/openapi.json")).json()
            self.invoices = bool((spec["paths"].get("/invoices") or {}).get("post"))

    # -- traffic -------------------------------------------------------------------

    async def _request(self, client: httpx.AsyncClient, kind: str) -> None:
        sku = self._pick(self.skus)
        phase = self.phase_index
        write: tuple[str, str, int] | None = None  # (key, operation, stock delta)
        start = time.monotonic()
        try:
            if kind == "read":
                r = await client.get(f"/products/{sku}")
            elif kind == "list":
                r = await client.get("/products", params={"category": self._pick(CATEGORIES)})
            elif kind == "search":
                r = await client.get("/products", params={"q": "product", "limit": 10})
            elif kind == "history":
                r = await client.get(f"/products/{sku}/movements", params={"limit": 20})
            elif kind == "report":
                r = await client.get("/reports/low-stock")
            elif kind == "move":
                key = self._key("move")
                direction = "in" if self._rand() < 0.5 else "out"
                quantity = 1 + int(self._rand() * 3)
                body = {"kind": direction, "quantity": quantity, "reason": "demo"}
                write = (key, "stock.move", quantity if direction == "in" else -quantity)
                r = await client.post(
                    f"/products/{sku}/movements", json=body, headers={"Idempotency-Key": key}
                )
            elif kind == "update":
                key = self._key("update")
                patch = {"min_stock": 5 + int(self._rand() * 20)}
                write = (key, "product.update", 0)
                r = await client.patch(
                    f"/products/{sku}", json=patch, headers={"Idempotency-Key": key}
                )
            elif kind == "price":
                r = await client.get(f"/products/{sku}/price-suggestion")
            else:  # invoice
                text = f"Supplier: Demo Supplies\n{sku}  Widget  qty 5  unit cost 4.20\n"
                files = {"file": (f"invoice-{self._counter}.txt", text, "text/plain")}
                r = await client.post("/invoices", files=files, data={"supplier": "Demo"})
        except httpx.HTTPError:
            self.samples.append(Sample(phase, kind, "failed", 0, time.monotonic() - start, None))
            if write is not None:
                self.writes.append(WriteRecord(write[0], write[1], 0, phase, sku, write[2]))
            return
        latency = time.monotonic() - start
        self.samples.append(
            Sample(
                phase,
                kind,
                classify(kind, r),
                r.status_code,
                latency,
                r.headers.get("x-degradation-level"),
            )
        )
        if write is not None:
            self.writes.append(WriteRecord(write[0], write[1], r.status_code, phase, sku, write[2]))

    async def traffic(self, client: httpx.AsyncClient) -> None:
        loop = asyncio.get_running_loop()
        kinds = [k for k, _ in MIX if k != "invoice" or self.invoices]
        weights = [w for k, w in MIX if k in kinds]
        total = sum(weights)
        cumulative: list[tuple[float, str]] = []
        acc = 0.0
        for kind, weight in zip(kinds, weights, strict=True):
            acc += weight / total
            cumulative.append((acc, kind))
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / self.options.rate
        next_at = loop.time()
        while not self._stop_traffic.is_set():
            if len(tasks) < self.options.concurrency:
                roll = self._rand()
                kind = next((k for edge, k in cumulative if roll <= edge), kinds[-1])
                task = asyncio.create_task(self._request(client, kind))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            next_at += interval
            delay = next_at - loop.time()
            if delay < -1.0:
                next_at = loop.time()  # far behind: do not burst to catch up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, delay)):
                    await self._stop_traffic.wait()
        if tasks:
            await asyncio.wait(tasks)

    # -- watching ------------------------------------------------------------------

    async def poll(self, client: httpx.AsyncClient) -> None:
        try:
            token = {"Authorization": f"Bearer {self.stack.admin_token}"}
            health = (await client.get("/health", headers=token)).json()
            about = (await client.get("/about")).json()
        except (httpx.HTTPError, ValueError):
            return
        self.level = str(health.get("level", "?"))
        self.score = float(health.get("score", 0.0))
        self.components = {c["name"]: c for c in health.get("components", []) if "name" in c}
        self.transitions = list(health.get("transitions", []))
        self.outbox = dict(about.get("outbox") or {})
        self.levels.append((self.now(), self.level, self.score))

    async def watch(self, client: httpx.AsyncClient) -> None:
        last_line = 0.0
        while not self._stop_watch.is_set():
            await self.poll(client)
            if self.now() - last_line >= 1.0:
                last_line = self.now()
                self.progress()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await self._stop_watch.wait()

    def progress(self) -> None:
        phase = self.phases[self.phase_index].name if self.phases else "start"
        counts = _outcomes(self.samples)
        _say(
            self.out,
            f"[{self.now():6.1f}s] {phase:<14} {self.level:<9} score {self.score:5.1f}  "
            f"requests ok {counts['ok']:>5} degraded {counts['degraded']:>4} "
            f"failed {counts['failed']:>3}  outbox {self.outbox.get('pending', '?')}",
        )

    def component_down(self, name: str) -> bool:
        comp = self.components.get(name) or {}
        breaker = comp.get("breaker") or {}
        return bool(comp.get("down")) or breaker.get("state") in ("open", "forced_open")

    async def wait_for(self, predicate: Callable[[], bool], within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.1)
        return predicate()

    # -- the timeline --------------------------------------------------------------

    def build_timeline(self) -> None:
        s = self.stack
        self.phases = [
            Phase("baseline", "OPTIMAL"),
            Phase(
                "redis down",
                "DEGRADED",
                ("redis",),
                s.redis_down,
                s.redis_back,
                "cache",
            ),
            Phase(
                "openai 429",
                "LIMITED",
                ("openai",),
                s.openai_429,
                s.openai_back,
                "openai",
            ),
            Phase(
                "database down",
                "MINIMAL",
                ("database",),
                s.database_down,
                s.database_back,
                "database",
            ),
            Phase("recovery", "OPTIMAL"),
        ]
        for phase in self.phases:
            missing = [n for n in phase.needs if not s.deps[n].available]
            if missing:
                phase.skipped = "; ".join(f"{n}: {s.deps[n].missing}" for n in missing)

    async def play(self, phase: Phase) -> None:
        phase.started = self.now()
        if phase.skipped:
            _say(self.out, f"--- {phase.name}: skipped ({phase.skipped})")
            phase.ended = self.now()
            return
        _say(self.out, f"--- {phase.name}: expecting {phase.expected}")
        if phase.inject is not None:
            await asyncio.to_thread(phase.inject)
        if phase.name == "recovery":
            reached = await self.wait_for(
                lambda: self.level == "OPTIMAL" and self.outbox.get("pending") == 0,
                self.options.recovery_timeout,
            )
        else:
            reached = await self.wait_for(
                lambda: self.level == phase.expected, self.options.reach_timeout
            )
        if reached:
            phase.reached_after = self.now() - phase.started
            _say(self.out, f"    {phase.expected} reached after {phase.reached_after:.1f} s")
            await asyncio.sleep(self.options.hold if phase.name != "recovery" else 2.0)
        else:
            recovery = phase.name == "recovery"
            waited = self.options.recovery_timeout if recovery else self.options.reach_timeout
            backlog = f", outbox backlog {self.outbox.get('pending')}" if recovery else ""
            phase.notes.append(
                f"expected {phase.expected}, still {self.level} (score {self.score:.1f}) "
                f"after {waited:g} s{backlog}"
            )
            _say(self.out, f"    NOT REACHED: {phase.notes[-1]}")
            for name, comp in sorted(self.components.items()):
                if comp.get("configured") and comp.get("status") != "up":
                    breaker = (comp.get("breaker") or {}).get("state", "-")
                    why = "; ".join(comp.get("why") or [])
                    phase.notes.append(
                        f"{name} {comp.get('status')} (breaker {breaker}, score "
                        f"{comp.get('score')}): {why}"
                    )
                    _say(self.out, f"      {phase.notes[-1]}")
        if phase.clear is not None:
            await asyncio.to_thread(phase.clear)
            if phase.settle is not None:
                name = phase.settle
                cleared = self.now()
                back = await self.wait_for(
                    lambda: not self.component_down(name), self.options.settle_timeout
                )
                if back:
                    _say(self.out, f"    {name} back after {self.now() - cleared:.1f} s")
                else:
                    phase.notes.append(
                        f"{name} still down {self.options.settle_timeout:g} s after the fault "
                        "was cleared"
                    )
                    _say(self.out, f"    {phase.notes[-1]}")
        phase.ended = self.now()

    async def run(self) -> None:
        timeout = httpx.Timeout(10.0, connect=3.0)
        limits = httpx.Limits(max_connections=self.options.concurrency + 4)
        async with (
            httpx.AsyncClient(base_url=self.url, timeout=timeout, limits=limits) as client,
            httpx.AsyncClient(base_url=self.url, timeout=timeout) as watcher,
        ):
            await self.seed(client)
            if not self.invoices:
                _say(self.out, "  (the service has no POST /invoices: no invoice uploads)")
            self.build_timeline()
            await self.poll(watcher)
            self.t0 = time.monotonic()
            self.levels.clear()
            watch = asyncio.create_task(self.watch(watcher))
            traffic = asyncio.create_task(self.traffic(client))
            try:
                for index, phase in enumerate(self.phases):
                    self.phase_index = index
                    await self.play(phase)
                self._stop_traffic.set()
                await traffic
                # the last writes may have gone to the outbox: let the replayer take them
                await self.wait_for(lambda: self.outbox.get("pending") == 0, 15.0)
                self._stop_watch.set()
                await watch
                await self.poll(watcher)
            finally:  # interrupted or failed: stop at once
                for task in (traffic, watch):
                    task.cancel()


# --------------------------------------------------------------------------- the summary


def _level_durations(
    levels: Sequence[tuple[float, str, float]], start: float, end: float
) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, (t, level, _) in enumerate(levels):
        t_next = levels[i + 1][0] if i + 1 < len(levels) else end
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo:
            out[level] = out.get(level, 0.0) + hi - lo
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


@dataclass
class Verdict:
    ok: bool
    reasons: list[str]
    report: dict[str, Any]


def summarize(demo: Demo, stack: DemoStack, out: TextIO) -> Verdict:
    reasons: list[str] = []
    end = demo.now()
    report: dict[str, Any] = {"quick": demo.options.quick, "phases": [], "missing": {}}
    for name, dep in stack.deps.items():
        if not dep.available:
            report["missing"][name] = dep.missing
    _say(out, "")
    _say(out, f"=== inventario demo summary ({'quick' if demo.options.quick else 'full'}) ===")
    if report["missing"]:
        for name, why in report["missing"].items():
            _say(out, f"not started: {name}: {why}")
    header = (
        f"{'phase':<14} {'expected':<9} {'reached':<12} {'ok':>5} {'degr':>5} {'fail':>5} "
        f"{'p50 ms':>7} {'p99 ms':>7}  levels (s)"
    )
    _say(out, header)
    for index, phase in enumerate(demo.phases):
        samples = [s for s in demo.samples if s.phase == index]
        counts = _outcomes(samples)
        latencies = [s.latency for s in samples]
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        durations = _level_durations(demo.levels, phase.started, phase.ended or end)
        if phase.skipped:
            reached = "skipped"
        elif phase.reached_after is not None:
            reached = f"yes {phase.reached_after:.1f}s"
        else:
            reached = "NO"
            reasons.append(f"phase {phase.name!r}: {'; '.join(phase.notes)}")
        levels_text = ", ".join(
            f"{lvl} {secs:.1f}"
            for lvl, secs in sorted(
                durations.items(), key=lambda kv: LEVELS.index(kv[0]) if kv[0] in LEVELS else 9
            )
        )
        _say(
            out,
            f"{phase.name:<14} {phase.expected:<9} {reached:<12} {counts['ok']:>5} "
            f"{counts['degraded']:>5} {counts['failed']:>5} {_ms(p50):>7} {_ms(p99):>7}  "
            f"{levels_text}",
        )
        for note in phase.notes:
            if phase.reached_after is not None:
                _say(out, f"{'':<14} note: {note}")
        report["phases"].append(
            {
                "name": phase.name,
                "expected": phase.expected,
                "skipped": phase.skipped,
                "reached": phase.reached_after is not None,
                "reached_after_s": phase.reached_after,
                "duration_s": (phase.ended or end) - phase.started,
                "requests": counts,
                "p50_ms": None if p50 is None else p50 * 1000,
                "p99_ms": None if p99 is None else p99 * 1000,
                "levels_s": durations,
                "notes": phase.notes,
            }
        )
    overall = _level_durations(demo.levels, 0.0, end)
    seen = [lvl for lvl in LEVELS if lvl in overall]
    _say(out, "levels reached: " + ", ".join(f"{lvl} {overall[lvl]:.1f} s" for lvl in seen))
    totals = _outcomes(demo.samples)
    all_latencies = [s.latency for s in demo.samples]
    _say(
        out,
        f"requests served: {len(demo.samples)} (ok {totals['ok']}, degraded {totals['degraded']}, "
        f"failed {totals['failed']}); p50 {_ms(percentile(all_latencies, 50))} ms, "
        f"p99 {_ms(percentile(all_latencies, 99))} ms",
    )
    statuses: dict[str, int] = {}
    for s in demo.samples:
        if s.outcome == "failed":
            key = f"{s.kind} {s.status or 'no answer'}"
            statuses[key] = statuses.get(key, 0) + 1
    if statuses:
        _say(out, "failed requests: " + ", ".join(f"{k} x{v}" for k, v in sorted(statuses.items())))

    accepted = [w for w in demo.writes if w.status in (200, 201, 202)]
    queued = [w for w in accepted if w.status == 202]
    moves = [w for w in accepted if w.operation == "stock.move"]
    try:
        idem_keys, move_rows = stack.applied(demo.prefix)
    except Exception as exc:
        idem_keys, move_rows = set(), {}
        reasons.append(f"could not read the database to check the writes: {exc}")
    applied = [w for w in accepted if w.key in idem_keys]
    moves_applied = [w for w in moves if move_rows.get(w.key) == (w.sku, w.delta)]
    missing = [w for w in accepted if w.key not in idem_keys]
    queued_applied = [w for w in queued if w.key in idem_keys]
    unaccepted = {w.key for w in demo.writes} - {w.key for w in accepted}
    extra = len(unaccepted & idem_keys)
    _say(
        out,
        f"writes accepted: {len(accepted)} (direct {len(accepted) - len(queued)}, queued 202 "
        f"{len(queued)}); applied: {len(applied)} (queued applied {len(queued_applied)}; "
        f"stock movements {len(moves_applied)} of {len(moves)})",
    )
    refused = len(demo.writes) - len(accepted)
    if refused:
        _say(
            out,
            f"writes refused or unanswered: {refused} (applied anyway after a lost answer: "
            f"{extra})",
        )
    outbox = demo.outbox
    _say(
        out,
        f"outbox: replayed {outbox.get('replayed_total', '?')}, backlog "
        f"{outbox.get('pending', '?')}, dead letters {outbox.get('dead_letters', '?')}",
    )
    if missing:
        sample = ", ".join(w.key for w in missing[:5])
        reasons.append(
            f"{len(missing)} accepted write(s) are not in the database (e.g. {sample}); "
            f"outbox backlog {outbox.get('pending', '?')}, dead letters "
            f"{outbox.get('dead_letters', '?')}"
        )
    if len(moves_applied) != len(moves):
        reasons.append(
            f"{len(moves) - len(moves_applied)} accepted stock movement(s) have no movement "
            "row with their sku and quantity"
        )
    if demo.transitions:
        _say(out, "transitions (from the service):")
        first = demo.transitions[0].get("at", 0.0)
        for t in demo.transitions[-12:]:
            _say(
                out,
                f"  +{float(t.get('at', first)) - first:6.1f}s {t.get('from')} -> {t.get('to')} "
                f"(score {float(t.get('score', 0)):.1f}): {t.get('reason')}",
            )
    ok = not reasons
    report.update(
        ok=ok,
        reasons=reasons,
        levels_s=overall,
        requests={"total": len(demo.samples), **totals},
        writes={
            "accepted": len(accepted),
            "queued": len(queued),
            "applied": len(applied),
            "queued_applied": len(queued_applied),
            "movements_accepted": len(moves),
            "movements_applied": len(moves_applied),
        },
        outbox=outbox,
    )
    skipped = [p.name for p in demo.phases if p.skipped]
    report["skipped"] = skipped
    if ok:
        which = f"every phase that could run ({len(skipped)} skipped: " if skipped else ""
        which = f"{which}{', '.join(skipped)})" if skipped else "every phase"
        _say(
            out,
            f"result: PASS - {which} reached its level; writes accepted = applied = {len(applied)}",
        )
    else:
        _say(out, "result: FAIL")
        for reason in reasons:
            _say(out, f"  - {reason}")
    return Verdict(ok, reasons, report)


# --------------------------------------------------------------------------- entry point


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # stop like Ctrl-C: the finally clauses clean up


def run_demo(args: argparse.Namespace) -> int:
    """Start the stack, play the timeline, print the summary; the exit status."""
    summary_json = getattr(args, "summary_json", None)
    given = getattr(args, "rate", None)
    rate = 25.0 if given is None else float(given)
    if not 0 < rate <= 1000:
        print(
            f"inventario demo: --rate must be in (0, 1000] requests/s, got {rate:g}",
            file=sys.stderr,
        )
        return 2
    options = DemoOptions(
        quick=bool(getattr(args, "quick", False)),
        rate=rate,
        summary_json=Path(summary_json) if summary_json else None,
    )
    out = sys.stdout
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not the main thread: no handler
        signal.signal(signal.SIGTERM, _on_sigterm)
    stack = DemoStack(options, out)
    started = time.monotonic()
    try:
        _say(
            out, f"inventario demo: starting a local stack ({'quick' if options.quick else 'full'})"
        )
        try:
            stack.start()
        except Exception as exc:
            # the first line only: the service's log follows (its data dir goes on exit)
            what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _say(out, f"inventario demo: could not start the service: {what}")
            log = stack.service_log_tail()
            if log:
                _say(out, f"service log (last lines):\n{log}")
            return 2
        demo = Demo(stack, options, out)
        try:
            asyncio.run(demo.run())
        except Exception as exc:
            _say(out, f"inventario demo: the run failed: {type(exc).__name__}: {exc}")
            _say(out, f"service log (last lines):\n{stack.service_log_tail()}")
            return 1
        verdict = summarize(demo, stack, out)
        _say(out, f"total time {time.monotonic() - started:.1f} s")
        if options.summary_json is not None:
            options.summary_json.write_text(json.dumps(verdict.report, indent=2, default=str))
        if not verdict.ok:
            _say(out, f"service log (last lines):\n{stack.service_log_tail()}")
        return 0 if verdict.ok else 1
    except KeyboardInterrupt:
        _say(out, "\ninventario demo: interrupted; stopping the stack")
        return 130
    finally:
        stack.close()
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description="Start a private Redis, PostgreSQL, moto S3 and an OpenAI stub, each "
        "behind a fault proxy, and inventario on them; send a request mix through a fault "
        "timeline and end with a summary per phase. Missing server binaries are named and "
        "their phases skipped. Exit status: 0 when every accepted write was applied, 1 "
        "otherwise, 2 when the stack could not start.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter phases, about a minute (default: off, the full timeline of about two "
        "minutes)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=25.0,
        help="requests per second, more than 0 and at most 1000 (default: 25)",
    )
    parser.add_argument(
        "--summary-json",
        metavar="PATH",
        default=None,
        help="also write the summary as JSON to PATH (default: not written)",
    )
    return run_demo(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
