"""A render host needs only the API's URL and key: the ledger's database is never opened."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.connections import connection
from ledger.store import Ledger
from service.cli.main import app
from service.keys import create_key
from service.settings import get_settings
from tests.conftest import free_port

RENDER = ["render", "--use-case", "social", "--prompt", "a red chair", "--steps", "2"]


def _events(ledger: Ledger, tenant: str) -> int:
    with connection(ledger.engine) as raw:
        row = raw.execute("SELECT count(*) FROM cost_events WHERE tenant_id = %s", (tenant,))
        return int((row.fetchone() or (0,))[0])


def test_renders_over_http_without_the_ledgers_database(
    ledger: Ledger, api_base: str, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = f"r-{uuid.uuid4().hex[:10]}"
    key = create_key(ledger.engine, tenant, ["ingest"], "render host")
    nowhere = f"postgresql://nobody@127.0.0.1:{free_port()}/none"  # nothing listens there
    env = {
        "DATABASE_URL": nowhere,
        "RENDERLEDGER_DATA_DIR": str(tmp_path),
        "RENDERLEDGER_RENDER__LEDGER_URL": api_base,
        "RENDERLEDGER_RENDER__LEDGER_API_KEY": key,
    }
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        args = [*RENDER, "--tenant", tenant, "--out", str(tmp_path / "out")]
        first = CliRunner().invoke(app, args)
        assert first.exit_code == 0, first.output
        assert "1 delivered, 0 failed" in first.output
        without_caches = _events(ledger, tenant)
        assert without_caches > 0
        # With caches of their own (here the test database, migrated), a repeat hits them.
        monkeypatch.setenv("RENDERLEDGER_RENDER__CACHE_URL", db_url)
        get_settings.cache_clear()
        for _ in range(2):
            again = CliRunner().invoke(app, args)
            assert again.exit_code == 0, again.output
    finally:
        get_settings.cache_clear()
    with connection(ledger.engine) as raw:
        hits = raw.execute(
            "SELECT count(*) FROM cost_events WHERE tenant_id = %s AND cache = 'hit'", (tenant,)
        ).fetchone()
    assert hits is not None
    assert hits[0] >= 1
