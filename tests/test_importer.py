"""Bulk import from NDJSON, CSV, Parquet and CDN log files, local and on a real S3 endpoint
(moto); bad rows stop an import, or are skipped and reported."""

from __future__ import annotations

import csv
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import cdn_log
from ingest.importer import ImportFailed, import_events, open_source
from ingest.sample import unet_event
from ledger.connections import connection
from ledger.events import CostEvent
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


def _skip_import(ledger: Ledger, path: Path, batch_size: int = 4) -> Any:
    with ExitStack() as stack:
        source = open_source(str(path), None, stack)
        return import_events(ledger, source, batch_size=batch_size, skip_bad=True)


def test_skip_bad_writes_every_good_row_and_names_each_bad_one(
    ledger: Ledger, make_event: EventFactory, tenant: str, tmp_path: Path
) -> None:
    stored = make_event()
    ledger.append([stored])
    rows = _rows(make_event, 9)
    rows[1]["quantity"] = "-3"  # line 2: invalid
    rows[4]["sku"] = "gpu.nonexistent.second"  # line 5: refused by the append (unpriced)
    rows[6] = stored.model_dump(mode="json") | {"quantity": "9"}  # line 7: a known id, changed
    lines = [orjson.dumps(r) for r in rows]
    lines.insert(8, b'{"event_id": ')  # line 9: not JSON
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = _skip_import(ledger, path)
    assert (report.rows, report.accepted, report.refused) == (10, 6, 4)
    # Found when read, or when their batch is appended: in line order within a batch.
    assert sorted((e.line, e.field) for e in report.first_refused) == [
        (2, "quantity"),
        (5, "sku"),
        (7, "event_id"),
        (9, "json"),
    ]
    assert _tenant_count(ledger, tenant) == 1 + 6
    # Without the flag the same file stops at its first bad row, as before.
    with pytest.raises(ImportFailed, match="line 2, field quantity"):
        _import(ledger, str(path))


def test_skip_bad_reads_past_a_broken_csv_row(
    ledger: Ledger, make_event: EventFactory, tenant: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "broken.csv", _rows(make_event, 3))
    text = path.read_text().splitlines()
    text.insert(2, '"x"y,z')  # line 3: a quote the csv module refuses
    text.insert(3, "a,b,c,d,e,f,g,h,i,j,k,l,m,n")  # line 4: more fields than the header
    path.write_text("\n".join(text) + "\n")
    report = _skip_import(ledger, path)
    assert [(e.line, e.field) for e in report.first_refused] == [(3, "row"), (4, "row")]
    assert (report.accepted, _tenant_count(ledger, tenant)) == (3, 3)


CDN_HEADER = "#Version: 1.0\n#Fields: date time sc-bytes cs-uri-stem sc-status x-edge-request-id\n"


def _cdn_line(key: str, sent: str, request_id: str) -> str:
    return "\t".join(["2026-11-02", "10:00:00", sent, f"/{key}", "200", request_id]) + "\n"


def _import_cdn(ledger: Ledger, path: Path) -> Any:
    with ExitStack() as stack:
        source = open_source(str(path), "cdn-log", stack, engine=ledger.engine)
        return import_events(ledger, source, batch_size=3)


def _egress_ids(ledger: Ledger, tenant: str) -> set[uuid.UUID]:
    with connection(ledger.engine) as raw:
        rows = raw.execute(
            "SELECT event_id FROM cost_events WHERE tenant_id = %s AND stage = 'cdn_egress'",
            (tenant,),
        ).fetchall()
    return {r[0] for r in rows}


def test_cdn_ids_are_the_tenants_and_a_bad_line_is_skipped(
    ledger: Ledger, make_event: EventFactory, tenant: str, tmp_path: Path
) -> None:
    render = make_event()
    ledger.append([render])
    other = f"o-{uuid.uuid4().hex[:10]}"
    run = uuid.uuid4().hex
    # Another tenant posts events under the ids the request ids used to derive, first.
    squatted = [
        unet_event(other, event_id=uuid.uuid5(cdn_log.NAMESPACE, f"{run}-{n}")) for n in (1, 2)
    ]
    ledger.append(squatted)
    key = f"{tenant}/{render.render_id}.webp"
    log = tmp_path / "E2.log"
    log.write_text(
        CDN_HEADER
        + _cdn_line(key, "1000000", f"{run}-1")
        + _cdn_line(key, "lots", f"{run}-3")  # line 4: refused, the rest goes in
        + "2026-11-02\t10:00:00\t5\n"  # line 5: too few columns
        + _cdn_line(f"{other}/{render.render_id}.webp", "5", f"{run}-4")  # line 6: not other's
        + _cdn_line(key, "2000000", f"{run}-2")
    )
    report = _import_cdn(ledger, log)
    assert (report.accepted, report.refused) == (2, 3)
    assert [(e.line, e.field) for e in report.first_refused] == [
        (4, "sc-bytes"),
        (5, "row"),
        (6, "cs-uri-stem"),
    ]
    assert _egress_ids(ledger, tenant) == {
        cdn_log.event_id(tenant, f"{run}-1"),
        cdn_log.event_id(tenant, f"{run}-2"),
    }
    assert cdn_log.event_id(tenant, "r") == uuid.uuid5(cdn_log.NAMESPACE, f"{tenant}/r")
    again = _import_cdn(ledger, log)
    assert (again.accepted, again.duplicates, again.refused) == (0, 2, 3)


def test_cdn_lines_imported_under_the_old_ids_stay_duplicates(
    ledger: Ledger, make_event: EventFactory, tenant: str, tmp_path: Path
) -> None:
    render = make_event()
    ledger.append([render])
    request = f"old-{uuid.uuid4().hex}"
    log = tmp_path / "old.log"
    log.write_text(CDN_HEADER + _cdn_line(f"{tenant}/{render.render_id}.webp", "700", request))
    with ExitStack() as stack:  # the line as the importer made it before ids had a tenant
        ((_, row, _),) = cdn_log.cdn_rows(
            stack.enter_context(log.open("rb")), ledger.engine, cdn_log.CdnStats()
        )
    ledger.append(
        [CostEvent.model_validate(row | {"event_id": uuid.uuid5(cdn_log.NAMESPACE, request)})]
    )
    report = _import_cdn(ledger, log)
    assert (report.accepted, report.duplicates) == (0, 1)
    assert _egress_ids(ledger, tenant) == {uuid.uuid5(cdn_log.NAMESPACE, request)}
