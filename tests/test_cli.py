"""The ``renderledger`` command against a migrated database of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.cli import DEFAULT_PRICES, app
from ledger.settings import get_settings


@pytest.fixture
def cli(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[CliRunner]:
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_prices_sample_ingest_verify(cli: CliRunner, tmp_path: Path) -> None:
    loaded = cli.invoke(app, ["prices", "load", str(DEFAULT_PRICES)])
    assert loaded.exit_code == 0, loaded.output
    assert "loaded: version 1" in loaded.output
    assert "already loaded" in cli.invoke(app, ["prices", "load", str(DEFAULT_PRICES)]).output
    sample = tmp_path / "sample.ndjson"
    assert cli.invoke(app, ["sample", str(sample), "--renders", "50"]).exit_code == 0
    lines = sample.read_bytes().count(b"\n")
    ingested = cli.invoke(app, ["ingest", str(sample), "--batch-size", "100"])
    assert ingested.exit_code == 0, ingested.output
    assert f"{lines} rows: {lines} accepted, 0 duplicates" in ingested.output
    verified = cli.invoke(app, ["verify"])
    assert verified.exit_code == 0, verified.output
    assert f"{lines} events verified" in verified.output


def test_errors_exit_non_zero_with_a_message(cli: CliRunner, tmp_path: Path) -> None:
    bad_book = tmp_path / "bad.toml"
    bad_book.write_text(
        'name = "x"\neffective_from = 2026-01-01T00:00:00Z\ncurrency = "USD"\n'
        '[prices."a.b"]\nunit = "s"\nprice = 0.1\n'
    )
    result = cli.invoke(app, ["prices", "load", str(bad_book)])
    assert result.exit_code == 1
    assert "write the price as a string" in result.output
    missing = cli.invoke(app, ["ingest", str(tmp_path / "nope.ndjson")])
    assert missing.exit_code == 1
    assert "no such file" in missing.output
    assert cli.invoke(app, ["ingest", "x.ndjson", "--batch-size", "0"]).exit_code == 1
