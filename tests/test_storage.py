"""Images to S3 (moto's server on 127.0.0.1) and CDN egress back from the CDN's access log."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ingest.cdn_log import CdnStats
from ingest.client import Emitter, LedgerTransport, Spool
from ingest.importer import ImportFailed, import_events, open_source
from ledger.journal import read_render
from ledger.store import Ledger
from render.caption import CaptionClient
from render.presets import build
from render.renderer import Renderer, RenderRequest
from render.storage import S3Store

HEADER = (
    "#Version: 1.0\n#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) "
    "cs-uri-stem sc-status x-edge-request-id\n"
)


def _line(key: str, sent: int, request_id: str) -> str:
    return (
        "\t".join(
            [
                "2026-11-02",
                "10:00:00",
                "FRA56-C1",
                str(sent),
                "192.0.2.1",
                "GET",
                "d1.cloudfront.net",
                f"/{key}",
                "200",
                request_id,
            ]
        )
        + "\n"
    )


def _import_log(ledger: Ledger, path: Path, stats: CdnStats) -> Any:
    with ExitStack() as stack:
        source = open_source(str(path), "cdn-log", stack, engine=ledger.engine, cdn_stats=stats)
        return import_events(ledger, source, batch_size=100)


def test_render_to_s3_then_cdn_egress_from_the_log(
    ledger: Ledger, s3: Any, tenant: str, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket="renders")
    renderer = Renderer(
        build("tiny"),
        Emitter(LedgerTransport(ledger), Spool(tmp_path / "spool")),
        captions=CaptionClient([]),
        store=S3Store(s3, "renders"),
    )
    (result,) = renderer.render(RenderRequest(tenant, "social", "a teapot", steps=3))
    key = f"{tenant}/{result.render_id}.webp"
    assert result.uri == f"s3://renders/{key}"
    body = s3.get_object(Bucket="renders", Key=key)["Body"].read()
    stored = read_render(ledger.engine, result.render_id)
    storage = {e.sku: e for e in stored if e.stage == "storage"}
    assert storage["s3.put_request"].quantity == 1
    assert storage["s3.standard.gb_month"].quantity == Decimal(len(body)) / Decimal(10**9)

    log = tmp_path / "E2ABC.2026-11-02-10.log"
    log.write_text(
        HEADER
        + _line(key, 1_500_000, "req-1")
        + _line(key, 2_500_000, "req-2")
        + _line("favicon.ico", 1000, "req-3")
        + _line(f"{tenant}/{uuid.uuid4()}.webp", 10, "req-4")
    )
    stats = CdnStats()
    report = _import_log(ledger, log, stats)
    assert (report.accepted, stats.unmatched) == (2, 2)
    egress = [e for e in read_render(ledger.engine, result.render_id) if e.stage == "cdn_egress"]
    assert sum(e.quantity for e in egress) == Decimal("0.004")
    assert {e.use_case for e in egress} == {"social"}
    # $0.085 per GB: 4 MB cost 340,000 nanos.
    assert sum(e.cost_nanos for e in egress) == 340_000
    again = _import_log(ledger, log, CdnStats())
    assert (again.accepted, again.duplicates) == (0, 2)


def test_a_log_without_fields_header_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    log = tmp_path / "bad.log"
    log.write_text("#Version: 1.0\n" + _line("a/b.webp", 1, "r"))
    with pytest.raises(ImportFailed, match="line 2, field #Fields"):
        _import_log(ledger, log, CdnStats())
