"""``renderledger alerts …`` against a migrated database of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger import database
from ledger.connections import connection
from reports.alerts.store import append
from service.cli.main import app
from service.settings import get_settings


@pytest.fixture
def cli(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[CliRunner]:
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_evaluate_prints_the_score_and_passes(cli: CliRunner) -> None:
    result = cli.invoke(
        app, ["alerts", "evaluate", "--tenants", "2", "--days", "30", "--interval", "60"]
    )
    assert result.exit_code == 0, result.output
    assert "recall, changes ≥ 15 %" in result.output
    assert "precision" in result.output


def test_run_list_and_ack(cli: CliRunner, fresh_database: str) -> None:
    ran = cli.invoke(app, ["alerts", "run"])
    assert ran.exit_code == 0, ran.output
    assert "0 opened, 0 resolved" in ran.output
    assert "no alerts" in cli.invoke(app, ["alerts", "list"]).output
    alert_id = uuid.uuid4()
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    with connection(engine, transaction=True) as raw:
        append(
            raw,
            alert_id,
            "acme",
            "ecommerce",
            "unit_cost",
            "opened",
            {"message": "acme up"},
            currency="EUR",
        )
    engine.dispose()
    listed = cli.invoke(app, ["alerts", "list", "--status", "open"], env={"COLUMNS": "200"})
    assert str(alert_id) in listed.output
    assert "EUR" in listed.output
    acked = cli.invoke(app, ["alerts", "ack", str(alert_id)])
    assert acked.exit_code == 0, acked.output
    assert "acknowledged" in acked.output
    assert cli.invoke(app, ["alerts", "ack", "not-an-id"]).exit_code == 2
    assert cli.invoke(app, ["alerts", "list", "--status", "sleepy"]).exit_code == 2


def test_list_keeps_brackets_in_messages(cli: CliRunner, fresh_database: str) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    with connection(engine, transaction=True) as raw:
        message = "acme [bold]up[/] on model [sdxl]"
        append(raw, uuid.uuid4(), "acme", "ecommerce", "unit_cost", "opened", {"message": message})
    engine.dispose()
    listed = cli.invoke(app, ["alerts", "list"], env={"COLUMNS": "200"})
    assert "acme [bold]up[/] on model [sdxl]" in listed.output
