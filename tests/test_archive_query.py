"""The README's query over the Iceberg table (run exactly as printed there) gives the report
API's totals: cost by use case and stage for a tenant's month, reversals included."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.sample import sample_events
from ledger import database
from reports.archive_export import export_sealed
from reports.archive_settings import ArchiveSettings
from reports.jobs import run_rollup
from service.http.app import create_app
from service.keys import create_key
from service.settings import Settings
from tests.conftest import ledger_with_prices, serving

README = Path(__file__).parent.parent / "README.md"


def readme_query() -> str:
    text = README.read_text()
    block = re.search(
        r"<!-- archive-query:start -->\n```python\n(.*?)```\n<!-- archive-query:end -->",
        text,
        re.DOTALL,
    )
    assert block, "the README's archive query is gone"
    return block.group(1)


def test_the_readme_query_matches_the_report_api(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")  # no polars_iceberg here
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    october = datetime(2026, 10, 1, tzinfo=UTC)
    events = [e for e in sample_events(60, seed=21, start=october) if e.tenant_id == "acme"]
    late = list(sample_events(8, seed=22, start=october - timedelta(days=2)))
    ledger.append(events[: len(events) // 2])
    ledger.append(events[len(events) // 2 :] + [e for e in late if e.tenant_id == "acme"])
    reversed_one = events[3]
    ledger.append(
        [
            reversed_one.model_copy(
                update={"event_id": uuid.uuid4(), "reverses": reversed_one.event_id}
            )
        ]
    )
    settings = Settings(
        database_url=fresh_database, data_dir=tmp_path, archive=ArchiveSettings(lag_s=0)
    )
    assert export_sealed(engine, settings).events > 0
    run_rollup(engine)

    key = create_key(engine, None, ["admin"], "archive-query")
    with serving(create_app(settings, ledger, schedule=False)) as base:
        reported = httpx.get(
            f"{base}/v1/tenants/acme/report",
            params={"from": "2026-10-01", "to": "2026-11-01", "group_by": "use_case,stage"},
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )
    reported.raise_for_status()
    api = {
        (r["use_case"], r["stage"], r["currency"]): r["cost"]["nanos"]
        for r in reported.json()["rows"]
    }

    scope: dict[str, Any] = {"DATABASE": database.sqlalchemy_url(fresh_database)}
    exec(readme_query(), scope)  # noqa: S102  # the README's own text, kept honest
    archive = {(u, s, c): n for u, s, c, n in scope["totals"].iter_rows()}
    assert api
    assert archive == api
    engine.dispose()
