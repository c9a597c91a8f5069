"""One definition each: lock keys, the stage list, the tenant pattern and the HTTP error shape
are defined once, and the copies that used to drift are gone from the product."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ingest.cdn_log import _KEY
from ledger import locks
from ledger.events import TENANT_PATTERN, TENANT_RE, Stage
from ledger.tables import STAGE_COLUMNS, cost_events, render_rollup
from ledger.tables_alerts import alert_hourly
from reports.alerts import harness, series
from reports.rollups import SUMS
from service.http.app import create_app
from service.http.errors import http_error
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("ledger", "ingest", "render", "reports", "service", "bench")


def _sources() -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): p.read_text()
        for package in PRODUCT
        for p in (ROOT / package).rglob("*.py")
    }


def test_lock_keys_are_distinct_and_readable() -> None:
    fixed = {k: v for k, v in vars(locks).items() if k.isupper() and isinstance(v, int)}
    assert {"APPEND", "ROLLUP", "ALERTS", "WEBHOOKS", "MONTHLY"} <= fixed.keys()
    assert len(set(fixed.values())) == len(fixed)
    for key in fixed.values():  # four printable letters, so pg_locks can be read by a person
        assert key.to_bytes(4, "big").decode("ascii").isupper()
    namespaces = [v for k, v in vars(locks).items() if k.isupper() and isinstance(v, str)]
    assert {"invoice", "alert"} <= set(namespaces)
    assert len(set(namespaces)) == len(namespaces)
    assert all(":" not in n for n in namespaces)  # else one namespace could spell another's key


def test_scoped_lock_text_is_what_the_sql_used_to_build() -> None:
    # The keys must not move: a rolling deploy runs old and new processes side by side.
    assert locks.scoped(locks.INVOICE, "acme") == "invoice:acme"
    assert locks.scoped(locks.ALERT, "00000000-0000-0000-0000-000000000001") == (
        "alert:00000000-0000-0000-0000-000000000001"
    )


def test_no_lock_key_is_written_outside_the_registry() -> None:
    literal_key = re.compile(r"advisory\w*lock\(\s*(?:\d|'|hashtext\(\s*')")
    fixed = [v for k, v in vars(locks).items() if k.isupper() and isinstance(v, int)]
    spelled = re.compile(
        "|".join(rf"\b(?:0x{key:08x}|{key})\b" for key in fixed) + r"|LOCK\w* = \d", re.I
    )
    for path, text in _sources().items():
        assert not literal_key.search(text), path
        if path != "ledger/locks.py":
            assert not spelled.search(text), path


def test_the_stage_columns_come_from_the_enum() -> None:
    assert list(STAGE_COLUMNS) == [s.value for s in Stage if s is not Stage.RENDER]
    assert all(type(k) is str for k in STAGE_COLUMNS)  # plain keys: orjson and Polars take them
    for table in (render_rollup, alert_hourly):
        stage_columns = [c.name for c in table.columns if c.name in STAGE_COLUMNS.values()]
        assert stage_columns == list(STAGE_COLUMNS.values())
    assert set(STAGE_COLUMNS.values()) <= set(SUMS)
    assert tuple(STAGE_COLUMNS) == series.STAGES
    assert set(harness.STAGE_MEANS) == set(STAGE_COLUMNS)
    check = next(c for c in cost_events.constraints if c.name == "stage_known")
    assert all(f"'{s.value}'" in str(check.sqltext) for s in Stage)  # type: ignore[attr-defined]


def test_no_product_module_lists_the_stages_again() -> None:
    for path, text in _sources().items():
        if path != "ledger/events.py":
            assert not ('"postprocess"' in text and '"cdn_egress"' in text), path


def test_no_product_module_spells_the_tenant_pattern_again() -> None:
    for path, text in _sources().items():
        if path != "ledger/events.py":
            assert "[a-z0-9][a-z0-9_-]" not in text, path


def _tenant_parameters(schema: dict[str, Any]) -> list[tuple[str, str | None]]:
    found = []
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for p in operation.get("parameters", []):
                if p["name"] in ("tenant", "tenant_id"):
                    inner = p["schema"].get("anyOf", [p["schema"]])
                    patterns = [s.get("pattern") for s in inner if s.get("type") == "string"]
                    found.append((f"{path} {p['name']}", patterns[0] if patterns else None))
    return found


def test_every_tenant_parameter_of_the_api_follows_the_one_pattern() -> None:
    schema = create_app(Settings(database_url="postgresql:///unused"), schedule=False).openapi()
    found = _tenant_parameters(schema)
    assert len(found) > 5
    assert all(pattern == TENANT_PATTERN for _, pattern in found), found


def test_a_cdn_log_key_names_a_tenant_exactly_when_the_pattern_takes_it() -> None:
    render = "0b6f8e1c-3d2a-4f5e-9a7b-1c2d3e4f5a6b"
    for tenant in ("acme", "acme_2-x", "a" * 63, "a" * 64, "Acme", "-acme", "", "ac.me"):
        assert bool(_KEY.match(f"/{tenant}/{render}.png")) == bool(TENANT_RE.match(tenant))


def test_http_error_carries_the_extra_fields_of_the_error_shape() -> None:
    exc = http_error("batch rejected", 422, errors=[], errors_not_shown=3)
    detail: Any = exc.detail
    assert exc.status_code == 422
    assert detail == {"message": "batch rejected", "errors": [], "errors_not_shown": 3}
    detail = http_error("no such thing", 404).detail
    assert detail == {"message": "no such thing"}
