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


def test_render_command_and_weights_folder(cli: CliRunner, tmp_path: Path) -> None:
    from render.presets import build

    assert cli.invoke(app, ["prices", "load", str(DEFAULT_PRICES)]).exit_code == 0
    result = cli.invoke(
        app,
        [
            "render",
            "--tenant",
            "acme",
            "--use-case",
            "ecommerce",
            "--prompt",
            "white sneaker",
            "--n",
            "2",
            "--steps",
            "3",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 delivered, 0 failed; 18 cost events" in result.output
    assert len(list((tmp_path / "out" / "acme").glob("*.webp"))) == 2

    # A platform team's own diffusers folder: here the tiny pipeline, saved and loaded back.
    weights = tmp_path / "weights"
    build("tiny").pipe.save_pretrained(weights)
    result = cli.invoke(
        app,
        [
            "render",
            "--tenant",
            "acme",
            "--prompt",
            "red chair",
            "--weights",
            str(weights),
            "--steps",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 delivered" in result.output
    bad = cli.invoke(
        app, ["render", "--tenant", "acme", "--prompt", "x", "--weights", str(tmp_path)]
    )
    assert bad.exit_code == 1
    assert "not a diffusers folder" in bad.output


def test_keys_create_list_revoke(cli: CliRunner) -> None:
    made = cli.invoke(app, ["keys", "create", "--tenant", "acme", "--scopes", "ingest,read"])
    assert made.exit_code == 0, made.output
    key = made.output.strip()
    assert key.startswith("rlk_")
    key_id = key.split("_")[1]
    listed = cli.invoke(app, ["keys", "list"])
    assert key_id in listed.output
    assert key.split("_", 2)[2] not in listed.output  # the secret is never shown again
    assert cli.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    again = cli.invoke(app, ["keys", "revoke", key_id])
    assert again.exit_code == 1
    assert "no live key" in again.output
    bad = cli.invoke(app, ["keys", "create", "--tenant", "acme", "--scopes", "root"])
    assert bad.exit_code == 1
    assert "scopes must be some of" in bad.output
    assert cli.invoke(app, ["keys", "create", "--scopes", "read"]).exit_code == 1
