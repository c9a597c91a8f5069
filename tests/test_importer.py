"""Bulk import from NDJSON, CSV and Parquet files, local and on a real S3 endpoint (moto)."""

from __future__ import annotations

import csv
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.importer import ImportFailed, import_events, open_source
from ledger.connections import connection
from ledger.store import Ledger
from tests.conftest import EventFactory

FIELDS = [
    "event_id",
    "tenant_id",
    "use_case",
    "render_id",
    "stage",
    "sku",
    "quantity",
    "occurred_at",
    "cache",
    "baseline_quantity",
    "outcome",
    "reverses",
    "attributes",
]


def _rows(make_event: EventFactory, n: int) -> list[dict[str, Any]]:
    return [make_event().model_dump(mode="json") for _ in range(n)]


def write_ndjson(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "attributes": orjson.dumps(r["attributes"]).decode()})
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    flat = [{**r, "attributes": orjson.dumps(r["attributes"]).decode()} for r in rows]
    pq.write_table(pa.Table.from_pylist(flat), path)
    return path


def _import(ledger: Ledger, location: str, s3: Any = None, batch_size: int = 4) -> Any:
    with ExitStack() as stack:
        return import_events(ledger, open_source(location, None, stack, s3), batch_size=batch_size)


def _tenant_count(ledger: Ledger, tenant: str) -> int:
    with connection(ledger.engine) as raw:
        row = raw.execute("SELECT count(*) FROM cost_events WHERE tenant_id = %s", (tenant,))
        return int((row.fetchone() or (0,))[0])


@pytest.mark.parametrize(
    ("writer", "name"),
    [(write_ndjson, "e.ndjson"), (write_csv, "e.csv"), (write_parquet, "e.parquet")],
)
def test_each_format_imports_and_reimports_as_duplicates(
    ledger: Ledger, make_event: EventFactory, tenant: str, tmp_path: Path, writer: Any, name: str
) -> None:
    path = writer(tmp_path / name, _rows(make_event, 10))
    report = _import(ledger, str(path))
    assert (report.rows, report.accepted, report.batches) == (10, 10, 3)
    again = _import(ledger, str(path))
    assert (again.accepted, again.duplicates) == (0, 10)
    assert _tenant_count(ledger, tenant) == 10


def test_bad_row_names_its_line_and_leaves_no_partial_batch(
    ledger: Ledger, make_event: EventFactory, tenant: str, tmp_path: Path
) -> None:
    rows = _rows(make_event, 10)
    rows[5]["quantity"] = "-3"  # line 6: in the second batch of four (lines 5-8)
    path = write_ndjson(tmp_path / "bad.ndjson", rows)
    with pytest.raises(ImportFailed) as info:
        _import(ledger, str(path))
    assert (info.value.line, info.value.field, info.value.written) == (6, "quantity", 4)
    assert _tenant_count(ledger, tenant) == 4


def test_csv_bad_row_line_counts_the_header(
    ledger: Ledger, make_event: EventFactory, tenant: str, tmp_path: Path
) -> None:
    rows = _rows(make_event, 3)
    rows[2]["sku"] = "gpu.nonexistent.second"
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ImportFailed, match="line 4, field sku: no price for SKU"):
        _import(ledger, str(path), batch_size=10)
    assert _tenant_count(ledger, tenant) == 0


def test_broken_ndjson_line(ledger: Ledger, make_event: EventFactory, tmp_path: Path) -> None:
    path = tmp_path / "broken.ndjson"
    path.write_bytes(orjson.dumps(_rows(make_event, 1)[0]) + b'\n{"event_id": \n')
    with pytest.raises(ImportFailed, match="line 2, field json"):
        _import(ledger, str(path))


def test_unknown_format_and_missing_file(ledger: Ledger, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot tell the format"):
        _import(ledger, str(tmp_path / "events.txt"))
    with pytest.raises(ValueError, match="no such file"):
        _import(ledger, str(tmp_path / "missing.ndjson"))


@pytest.mark.parametrize(
    ("writer", "name"),
    [(write_ndjson, "a.ndjson"), (write_csv, "a.csv"), (write_parquet, "a.parquet")],
)
def test_import_from_s3(
    ledger: Ledger,
    make_event: EventFactory,
    tenant: str,
    tmp_path: Path,
    s3: Any,
    writer: Any,
    name: str,
) -> None:
    path = writer(tmp_path / name, _rows(make_event, 9))
    s3.create_bucket(Bucket="events")
    s3.upload_file(str(path), "events", f"{tenant}/{name}")
    report = _import(ledger, f"s3://events/{tenant}/{name}", s3=s3)
    assert (report.rows, report.accepted) == (9, 9)
    assert _tenant_count(ledger, tenant) == 9
