"""A render written to a local folder bills no S3 request (issue 13)."""

from __future__ import annotations

from pathlib import Path

from ingest.client import Emitter, LedgerTransport, Spool
from ledger.journal import read_render
from ledger.store import Ledger
from render.caption import CaptionClient
from render.presets import build
from render.renderer import Renderer, RenderRequest
from render.storage import LocalStore


def test_a_local_folder_bills_no_put_and_keeps_the_write_time(
    ledger: Ledger, tenant: str, tmp_path: Path
) -> None:
    renderer = Renderer(
        build("tiny"),
        Emitter(LedgerTransport(ledger), Spool(tmp_path / "spool")),
        captions=CaptionClient([]),
        store=LocalStore(tmp_path / "out"),
    )
    try:
        (result,) = renderer.render(RenderRequest(tenant, "social", "a teapot", steps=2))
    finally:
        renderer.emitter.close()
    assert result.uri is not None
    assert Path(result.uri).is_file()
    storage = [e for e in read_render(ledger.engine, result.render_id) if e.stage == "storage"]
    assert [e.sku for e in storage] == ["s3.standard.gb_month"]
    (kept,) = storage
    assert kept.quantity > 0
    assert kept.cost_nanos > 0
    assert kept.attributes["wall_s"] >= 0
    assert kept.attributes["uri"] == result.uri
