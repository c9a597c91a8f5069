"""Currencies (issue 13): every key is (tenant, currency); FX versions convert, day by day."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from ingest.sample import unet_event
from ledger import database
from ledger.connections import connection
from ledger.fx import FxError, FxTable, load_rates, parse_rates
from ledger.money import EXACT, round_nanos
from ledger.prices import parse_price_book
from ledger.store import Ledger
from reports.jobs import run_rollup
from service.cli.main import app
from service.http.app import create_app
from service.keys import create_key
from service.settings import Settings
from tests.conftest import ledger_with_prices, serving

# USD per EUR: Friday 2 October, then Monday 5; nothing on the weekend between.
RATES = "date,currency,rate\n2026-10-02,USD,1.0850\n2026-10-05,USD,1.0900\n"
EUR_BOOK = """
name = "eur-2026-10"
effective_from = 2026-10-10T00:00:00Z
currency = "EUR"
[prices."gpu.h100.second"]
unit = "second"
price = "0.0010"
[prices."render.image"]
unit = "image"
price = "0"
"""


def test_the_ecb_shapes_parse_and_a_bad_row_names_its_line() -> None:
    wide = "Date,USD,JPY,BGN,\n2024-01-05,1.0921,158.12,N/A,\n2024-01-04,1.0953,157.95,1.9558,\n"
    rates = parse_rates(wide).rates
    assert rates[(date(2024, 1, 5), "USD")] == Decimal("1.0921")
    assert (date(2024, 1, 5), "BGN") not in rates
    assert len(rates) == 5
    daily = "Date, USD, JPY, \n05 January 2024, 1.0921, 158.12, \n"
    assert parse_rates(daily).rates[(date(2024, 1, 5), "JPY")] == Decimal("158.12")
    with pytest.raises(FxError, match="line 3: rate 'abc'"):
        parse_rates("date,currency,rate\n2026-10-02,USD,1.08\n2026-10-05,USD,abc\n")
    with pytest.raises(FxError, match="line 2: currency 'usd'"):
        parse_rates("date,currency,rate\n2026-10-02,usd,1.08\n")
    with pytest.raises(FxError, match="line 3: USD on 2026-10-02 is given twice"):
        parse_rates("date,currency,rate\n2026-10-02,USD,1.08\n2026-10-02,USD,1.09\n")
    with pytest.raises(FxError, match="line 2: rate '-1' must be a positive"):
        parse_rates("date,currency,rate\n2026-10-02,USD,-1\n")


def test_a_day_takes_the_last_rate_within_the_window() -> None:
    table = FxTable(1, "EUR", {"USD": ([date(2026, 10, 2)], [Decimal("1.085")])})
    assert table.rate("USD", date(2026, 10, 4)) == Decimal("1.085")  # a Sunday
    assert table.factor("EUR", "USD", date(2026, 10, 9)) == Decimal("1.085")
    with pytest.raises(FxError, match="no USD rate on 2026-10-10 or in the 7 days before"):
        table.rate("USD", date(2026, 10, 10))
    with pytest.raises(FxError, match="no USD rate on 2026-10-01"):
        table.rate("USD", date(2026, 10, 1))


@pytest.fixture
def book(fresh_database: str) -> Iterator[tuple[Ledger, str]]:
    """A database of its own: a EUR cost book from 10 October would rate everyone's events."""
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    ledger.load_prices(parse_price_book(EUR_BOOK))
    yield ledger, fresh_database
    engine.dispose()


def _events(tenant: str) -> list[Any]:
    """USD work on Sunday 4 and Monday 5 October, EUR work on the 15th."""
    events = []
    for day, seconds in ((4, "1"), (5, "3"), (15, "2")):
        render = uuid.uuid4()
        at = datetime(2026, 10, day, 12, tzinfo=UTC)
        events += [
            unet_event(tenant, render, quantity=Decimal(seconds), occurred_at=at),
            unet_event(tenant, render, stage="render", sku="render.image", outcome="delivered",
                       occurred_at=at),
        ]  # fmt: skip
    return events


def test_two_currencies_are_never_summed_and_eur_is_the_hand_computed_sum(
    book: tuple[Ledger, str], tenant: str
) -> None:
    ledger, url = book
    ledger.append(_events(tenant))
    run_rollup(ledger.engine)
    version, created = load_rates(ledger.engine, parse_rates(RATES), "rates.csv")
    assert created
    assert load_rates(ledger.engine, parse_rates(RATES), "again.csv") == (version, False)
    key = create_key(ledger.engine, None, ["admin"], "fx tests")
    with serving(create_app(Settings(database_url=url), ledger, schedule=False)) as base:
        client = httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"})
        params = {"from": "2026-10-01", "to": "2026-11-01", "group_by": ""}
        per_currency = client.get(f"/v1/tenants/{tenant}/report", params=params).json()
        assert per_currency["currency"] is None
        costs = {r["currency"]: r["cost"]["nanos"] for r in per_currency["rows"]}
        assert costs == {"USD": 4_400_000, "EUR": 2_000_000}  # 1 s + 3 s at $0.0011; 2 s at €0.001
        eur = client.get(f"/v1/tenants/{tenant}/report", params=params | {"currency": "EUR"})
        assert eur.status_code == 200, eur.text
        body = eur.json()
        assert (body["currency"], body["fx_version"]) == ("EUR", version)
        (row,) = body["rows"]
        # Sunday the 4th takes Friday's rate; each day converted, the sum rounded once.
        exact = EXACT.divide(Decimal(1_100_000), Decimal("1.0850")) + EXACT.divide(
            Decimal(3_300_000), Decimal("1.0900")
        )
        assert row["cost"]["nanos"] == round_nanos(exact + 2_000_000)
        assert row["currency"] == "EUR"
        assert row["renders_delivered"] == 3
        assert row["cost_per_delivered_render"]["nanos"] == round_nanos((exact + 2_000_000) / 3)
        ranked = client.get("/v1/report/tenants", params=params | {"currency": "EUR"}).json()
        assert ranked["tenants"][0]["cost"]["nanos"] == row["cost"]["nanos"]
        in_usd = client.get(f"/v1/tenants/{tenant}/report", params=params | {"currency": "USD"})
        assert in_usd.status_code == 422
        message = in_usd.json()["detail"]["message"]
        assert message.startswith("currency: no USD rate on 2026-10-15")  # the EUR work's day
        unknown = client.get(
            f"/v1/tenants/{tenant}/report", params=params | {"currency": "EUR", "fx_version": 99}
        )
        assert unknown.status_code == 404
        assert "fx_version" in unknown.json()["detail"]["message"]
        bad = client.get(f"/v1/tenants/{tenant}/report", params=params | {"currency": "eur"})
        assert bad.status_code == 422


def test_fx_load_refuses_a_bad_file_whole_and_rates_are_append_only(
    book: tuple[Ledger, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, url = book
    monkeypatch.setenv("DATABASE_URL", url)
    from service.settings import get_settings

    get_settings.cache_clear()
    bad = tmp_path / "bad.csv"
    bad.write_text(RATES + "2026-10-06,USD,\n")
    result = CliRunner().invoke(app, ["fx", "load", str(bad)])
    assert result.exit_code == 1
    assert "line 4" in result.output
    with connection(ledger.engine) as raw:
        assert raw.execute("SELECT count(*) FROM fx_versions").fetchone() == (0,)
    good = tmp_path / "rates.csv"
    good.write_text(RATES)
    result = CliRunner().invoke(app, ["fx", "load", str(good)])
    assert result.exit_code == 0, result.output
    assert "loaded: FX version 1" in result.output
    get_settings.cache_clear()
    with connection(ledger.engine) as raw, pytest.raises(psycopg.Error, match="permission"):
        raw.execute("UPDATE fx_rates SET rate = 2")  # the app role may only add
    with psycopg.connect(database.libpq_url(url), autocommit=True) as su:
        for change in ("UPDATE fx_rates SET rate = 2", "DELETE FROM fx_versions"):
            with pytest.raises(psycopg.Error, match="append-only"):
                su.execute(change)  # and not even the owner may change one


def test_migration_0011_downgrades_and_applies_again(book: tuple[Ledger, str]) -> None:
    ledger, url = book
    database.downgrade(url, "0010")
    with psycopg.connect(database.libpq_url(url)) as raw:
        assert raw.execute("SELECT to_regclass('fx_rates')").fetchone() == (None,)
    database.migrate(url)
    with psycopg.connect(database.libpq_url(url)) as raw:
        assert raw.execute("SELECT to_regclass('fx_rates')").fetchone() == ("fx_rates",)
    ledger.append(_events(f"m-{uuid.uuid4().hex[:8]}"))
    assert run_rollup(ledger.engine, rebuild=True).ran
