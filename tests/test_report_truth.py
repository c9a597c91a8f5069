"""What a report prints is what it means: no float noise in latencies (issue 13, in part)."""

from __future__ import annotations

import uuid

import httpx
import orjson

from ingest.sample import unet_event
from ledger.store import Ledger
from reports.jobs import run_rollup


def test_latency_percentiles_print_without_float_noise(
    http: httpx.Client, ledger: Ledger, tenant: str
) -> None:
    events = []
    for latency in (0.1, 0.2):  # their midpoint is 0.15000000000000002 as a double
        render = uuid.uuid4()
        events += [
            unet_event(tenant, render),
            unet_event(
                tenant,
                render,
                stage="render",
                sku="render.image",
                outcome="delivered",
                attributes={"latency_ms": latency},
            ),
        ]
    assert (
        http.post(
            "/v1/events", content=orjson.dumps([e.model_dump(mode="json") for e in events])
        ).status_code
        == 200
    )
    run_rollup(ledger.engine)
    report = http.get(f"/v1/tenants/{tenant}/report", params={"from": "2026-10-01"}).json()
    assert report["rows"][0]["latency_p50_ms"] == 0.15
    csv = http.get(
        f"/v1/tenants/{tenant}/report", params={"from": "2026-10-01", "format": "csv"}
    ).text
    assert ",0.15," in csv
    assert "0.150000" not in csv
