"""Every metric the alert rules and the Grafana dashboard in deploy/ name is in a scrape of
inventario with everything attached (issue 11: metrics are read at scrape time now)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from brownout.testing.servers import RedisServer
from inventario.runtime import Runtime
from tests.inventario.conftest import WIDGET, running

pytestmark = pytest.mark.servers

prometheus_client = pytest.importorskip("prometheus_client")
yaml = pytest.importorskip("yaml")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: fed by the breakers and adapters (read at scrape time): every series must have samples
PULLED = re.compile(r"brownout_(calls|call_duration|breaker|dependency|cache|pool)_")


def _referenced() -> set[str]:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names = {n for e in exprs for n in re.findall(r"\bbrownout_[a-z0-9_]+", e)}
    assert len(names) > 20, names
    return names


async def test_every_metric_deploy_names_is_scraped(
    make_app: Callable[..., FastAPI], redis_server: RedisServer
) -> None:
    app = make_app(redis_url=redis_server.url)
    async with running(app) as client:
        rt: Runtime = app.state.runtime
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        for _ in range(2):  # a cache miss, then a hit
            assert (await client.get(f"/products/{WIDGET['sku']}")).status_code == 200
        rt.manager.evaluate()
        # attaching the metrics took no breaker off its lock-free path
        for breaker in rt.registry:
            assert breaker._call_listeners == (), breaker.name
        body = (await client.get("/metrics")).text
    samples: set[str] = set()
    families: set[str] = set()
    for family in text_string_to_metric_families(body):
        families.add(family.name)
        samples.update(s.name for s in family.samples)
    missing = set()
    for name in sorted(_referenced()):
        if name in samples:
            continue
        # a labelled counter of the outbox or spool has no sample before its first event:
        # its family must still be declared
        family = re.sub(r"_(total|bucket|count|sum)$", "", name)
        if PULLED.match(name) or family not in families:
            missing.add(name)
    assert not missing, missing
