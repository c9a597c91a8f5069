"""Invoices over real HTTP and the CLI: documents, isolation, finalize, S3 export."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from ledger.store import Ledger
from service.cli.main import app
from service.keys import create_key
from service.settings import get_settings
from tests.billing_helpers import add_renders

PLANS = """
[[plan]]
tenant = "{t}"
effective_from = 2026-09-01
name = "Growth"
minimum_commitment = "5.00"
[plan.default]
markup = "0.30"
[plan.use_cases.ecommerce]
tiers = [{{up_to = 10, unit_price = "0.05"}}, {{unit_price = "0.04"}}]

[[credit]]
tenant = "{t}"
id = "welcome"
amount = "2.00"
granted_on = 2026-09-01
"""


@pytest.fixture
def billed(ledger: Ledger) -> dict[str, Any]:
    a, b = f"inv-{uuid.uuid4().hex[:8]}", f"inv-{uuid.uuid4().hex[:8]}"
    add_renders(ledger, a, datetime(2026, 10, 3, tzinfo=UTC), 12, use_case="ecommerce")
    add_renders(ledger, a, datetime(2026, 10, 4, tzinfo=UTC), 3, use_case="social", seconds="90")
    add_renders(ledger, b, datetime(2026, 10, 4, tzinfo=UTC), 2)
    return {
        "a": a,
        "b": b,
        "a_read": create_key(ledger.engine, a, ["read"]),
        "b_read": create_key(ledger.engine, b, ["read"]),
    }


def _as(api_base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=api_base, headers={"x-api-key": key}, timeout=30)


def test_plan_from_file_invoice_as_json_csv_pdf(
    cli: CliRunner, billed: dict[str, Any], api_base: str, tmp_path: Path, http: httpx.Client
) -> None:
    a = billed["a"]
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS.format(t=a))
    loaded = cli.invoke(app, ["plans", "load", str(plans)])
    assert loaded.exit_code == 0, loaded.output
    assert "1 plan(s) added" in loaded.output
    with _as(api_base, billed["a_read"]) as client:
        doc = client.get(f"/v1/tenants/{a}/invoices/2026-10").json()
        lines = {(ln["use_case"], ln["tier"]): ln for ln in doc["lines"]}
        assert lines["ecommerce", 0]["amount"] == "0.50"
        assert lines["ecommerce", 1]["amount"] == "0.08"
        # The customer's copy: images bought, never the cost under a markup.
        social = lines["social", None]
        assert (social["quantity"], social["unit"], social["unit_price"]) == ("3", "image", None)
        assert doc["view"] == "customer"
        assert not {"cost_basis", "positions", "content_sha256"} & set(doc)
        assert doc["commitment"]["amount"] != "0.00"
        assert doc["credits_applied"] == "2.00"
        assert (
            client.get(f"/v1/tenants/{a}/invoices/2026-10", params={"view": "internal"}).status_code
            == 403
        )
        assert doc["total"] == "5.00"
        assert doc["amount_due"] == "3.00"
        internal = http.get(f"/v1/tenants/{a}/invoices/2026-10", params={"view": "internal"})
        by = {(ln["use_case"], ln["tier"]): ln for ln in internal.json()["lines"]}
        assert by["social", None]["unit_price"] == "1.3"
        assert internal.json()["cost_basis"]["events"] > 0
        table = list(
            csv.reader(
                io.StringIO(
                    client.get(f"/v1/tenants/{a}/invoices/2026-10", params={"format": "csv"}).text
                )
            )
        )
        assert table[0][:4] == ["invoice", "DRAFT", "2026-10", "USD"]
        totals = [(row[1], row[-1]) for row in table if row[0] == "total"]
        assert [name for name, _ in totals] == [
            "subtotal",
            "commitment_topup",
            "adjustments_total",
            "total",
            "credits_applied",
            "amount_due",
        ]
        assert dict(totals)["total"] == "5.00"
        assert table[-1][1:] == ["amount_due", *[""] * 6, "3.00"]
        cents = [int(row[-1].replace(".", "")) for row in table if row[0] == "line"]
        assert sum(cents) == int(dict(totals)["subtotal"].replace(".", ""))
        assert not {"exact", "rounding"} & set(table[1])
        pdf = client.get(f"/v1/tenants/{a}/invoices/2026-10", params={"format": "pdf"})
    assert pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "DRAFT invoice (not final)" in text
    assert re.search(r"Total\s+5\.00", text)
    assert re.search(r"Prepaid credits applied\s+-2\.00", text)
    assert re.search(r"Amount due\s+3\.00 USD", text)
    assert "Commitment top-up" in text
    assert "Metered cost" not in text
    assert a in text


def test_one_tenant_never_sees_another_tenants_invoices(
    billed: dict[str, Any], api_base: str
) -> None:
    a, b = billed["a"], billed["b"]
    with _as(api_base, billed["b_read"]) as client:
        for path in (
            f"/v1/tenants/{a}/invoices/2026-10",
            f"/v1/tenants/{a}/invoices",
            f"/v1/tenants/{a}/plans",
            f"/v1/tenants/{a}/invoices/2026-10?format=pdf",
        ):
            assert client.get(path).status_code == 404, path
        assert client.get(f"/v1/tenants/{b}/invoices/2026-10").status_code == 200
        assert client.post(f"/v1/tenants/{b}/invoices/2026-10/finalize").status_code == 403


def test_finalize_and_credit_note_over_http(http: httpx.Client, billed: dict[str, Any]) -> None:
    b = billed["b"]
    first = http.post(f"/v1/tenants/{b}/invoices/2026-10/finalize")
    assert first.status_code == 201, first.text
    again = http.post(f"/v1/tenants/{b}/invoices/2026-10/finalize")
    assert again.status_code == 200
    assert again.json() == first.json()
    note = http.post(
        f"/v1/tenants/{b}/invoices/2026-10/credit-notes",
        json={"amount": "0.01", "reason": "rounding goodwill"},
    )
    assert note.status_code == 201, note.text
    too_much = http.post(
        f"/v1/tenants/{b}/invoices/2026-10/credit-notes", json={"amount": "1000", "reason": "no"}
    )
    assert too_much.status_code == 409
    assert "exceed" in too_much.json()["detail"]["message"]
    listed = http.get(f"/v1/tenants/{b}/invoices").json()
    assert listed[0]["number"] == first.json()["number"]
    assert listed[0]["credit_notes"][0]["amount_minor"] == 1
    bad = http.get(f"/v1/tenants/{b}/invoices/2026-13")
    assert bad.status_code == 422
    assert "YYYY-MM" in bad.json()["detail"]["message"]


def test_put_plan_validates_and_refuses_rewriting_history(
    http: httpx.Client, billed: dict[str, Any]
) -> None:
    a = billed["a"]
    body = {"default": {"tiers": [{"up_to": 5, "unit_price": "0.1"}, {"unit_price": "0.05"}]}}
    assert http.put(f"/v1/tenants/{a}/plans/2026-12-01", json=body).status_code == 201
    assert http.put(f"/v1/tenants/{a}/plans/2026-12-01", json=body).status_code == 200
    other = {"default": {"markup": "0.1"}}
    assert http.put(f"/v1/tenants/{a}/plans/2026-12-01", json=other).status_code == 409
    bad = http.put(f"/v1/tenants/{a}/plans/2027-01-01", json={"default": {"markup": "x"}})
    assert bad.status_code == 422
    assert "default.markup" in bad.json()["detail"]["message"]


def test_export_all_tenants_to_s3_with_presigned_links(
    cli: CliRunner,
    billed: dict[str, Any],
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    ledger: Ledger,
) -> None:
    from decimal import Decimal

    from ledger.connections import connection
    from reports.billing.plans import Plan, store_plan

    eur = Plan(
        tenant=billed["b"],
        effective_from=date(2026, 10, 1),
        currency="EUR",
        usd_rate=Decimal("0.9"),
    )
    with connection(ledger.engine, transaction=True) as raw:
        store_plan(raw, eur)
    monkeypatch.setenv("S3_ENDPOINT_URL", s3.meta.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    get_settings.cache_clear()
    s3.create_bucket(Bucket="billing")
    result = cli.invoke(
        app,
        [
            "invoice",
            "export",
            "--month",
            "2026-10",
            "--tenant",
            billed["a"],
            "--tenant",
            billed["b"],
            "--to",
            "s3://billing/2026-10/",
        ],
    )
    assert result.exit_code == 0, result.output
    (totals,) = [line for line in result.output.splitlines() if "totals:" in line]
    assert " EUR" in totals, totals  # a total per currency, never one sum across them
    assert " USD" in totals, totals
    links = [line for line in result.stdout.splitlines() if line.startswith("http")]
    assert len(links) == 6
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="billing", Prefix="2026-10/")["Contents"]}
    assert f"2026-10/{billed['a']}/draft-2026-10.pdf" in keys
    pdf_link = next(link for link in links if billed["a"] in link and ".pdf" in link)
    fetched = httpx.get(pdf_link, timeout=30)
    assert fetched.status_code == 200
    assert fetched.content.startswith(b"%PDF")


def test_cli_refuses_bad_input_with_a_message(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "plans.toml"
    bad.write_text('[[plan]]\ntenant = "x"\neffective_from = 2026-10-01\ntimezone = "Mars/Base"\n')
    result = cli.invoke(app, ["plans", "load", str(bad)])
    assert result.exit_code == 1
    assert "plan[0].timezone" in result.output
    assert "unknown time zone" in result.output
    month = cli.invoke(
        app, ["invoice", "export", "--month", "10/2026", "--all-tenants", "--to", "x"]
    )
    assert month.exit_code == 2
    assert "YYYY-MM" in month.output


def test_cli_finalizes_from_one_batch_and_again_changes_nothing(
    cli: CliRunner, billed: dict[str, Any], api_base: str, http: httpx.Client
) -> None:
    a, b = billed["a"], billed["b"]
    internal = {"view": "internal"}
    draft = http.get(f"/v1/tenants/{a}/invoices/2026-10", params=internal).json()
    args = ["invoice", "finalize", "--month", "2026-10", "--tenant", a, "--tenant", b]
    first = cli.invoke(app, args)
    assert first.exit_code == 0, first.output
    number = re.search(rf"{a}: finalized (RL-\d{{4}}-\d{{6}}) total", first.output)
    assert number is not None, first.output
    assert f"total {draft['total']} USD" in first.output
    again = cli.invoke(app, args)
    assert f"{a}: already final {number[1]}" in again.output
    final = http.get(f"/v1/tenants/{a}/invoices/2026-10", params=internal).json()
    assert final["status"] == "finalized"
    assert final["lines"] == draft["lines"]
    assert final["issuer"]["legal_name"] == "Test Issuer Ltd"
    with _as(api_base, billed["a_read"]) as client:
        sent = client.get(f"/v1/tenants/{a}/invoices/2026-10").json()
    assert sent["number"] == number[1]
    assert sent["due_on"] is not None
    assert final["positions"]["through_seq"] >= draft["positions"]["through_seq"]
    early = cli.invoke(app, ["invoice", "finalize", "--month", "2099-01", "--tenant", a])
    assert early.exit_code == 1
    assert "not over" in early.output


def test_monthly_job_drafts_last_month_for_every_tenant(
    ledger: Ledger, billed: dict[str, Any], tmp_path: Path
) -> None:
    from reports.billing.monthly import draft_last_month

    written = draft_last_month(
        ledger.engine, str(tmp_path), now=datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
    )
    assert written is not None
    for tenant in (billed["a"], billed["b"]):
        folder = tmp_path / "2026-10" / tenant
        assert sorted(p.name for p in folder.iterdir()) == [
            "draft-2026-10.csv",
            "draft-2026-10.json",
            "draft-2026-10.pdf",
        ]


def test_admin_lists_finalized_invoices_across_tenants(
    http: httpx.Client, billed: dict[str, Any], ledger: Ledger, api_base: str
) -> None:
    from decimal import Decimal

    from ledger.connections import connection
    from reports.billing.credit_notes import issue_credit_note
    from reports.billing.lifecycle import finalize

    a, b = billed["a"], billed["b"]
    with connection(ledger.engine) as raw:
        doc_a, _ = finalize(raw, a, date(2026, 10, 1))
        doc_b, _ = finalize(raw, b, date(2026, 10, 1))
        issue_credit_note(raw, b, date(2026, 10, 1), Decimal("0.01"), "goodwill")
    listed = http.get("/v1/invoices", params={"from": "2026-10", "to": "2026-11"})
    assert listed.status_code == 200, listed.text
    mine = {i["tenant"]: i for i in listed.json() if i["tenant"] in (a, b)}
    assert (mine[a]["number"], mine[b]["number"]) == (doc_a.number, doc_b.number)
    assert [n["amount_minor"] for n in mine[b]["credit_notes"]] == [1]
    assert mine[a]["credit_notes"] == []
    later = http.get("/v1/invoices", params={"from": "2026-11"}).json()
    assert not [i for i in later if i["tenant"] in (a, b)]
    assert http.get("/v1/invoices", params={"status": "draft"}).status_code == 422
    bad = http.get("/v1/invoices", params={"from": "October"})
    assert bad.status_code == 422
    assert bad.json()["detail"]["errors"][0]["field"] == "query.from"
    with _as(api_base, billed["a_read"]) as tenant_client:
        assert tenant_client.get("/v1/invoices").status_code == 403
