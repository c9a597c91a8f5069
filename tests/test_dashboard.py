"""The dashboard end to end: a real headless Chromium (Debian's, driven by Playwright) against
the real app on loopback, over a seeded ledger; and the cookie, the offline docs and the
Grafana board over plain HTTP. Each browser test leaves a screenshot in its tmp_path."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from ingest.sample import unet_event
from ledger import database
from ledger.actual_costs import CapacityHeld
from ledger.capacity import load_pools, record
from ledger.connections import connection
from ledger.events import CostEvent
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from reports.alerts.store import append
from reports.allocation_job import run_allocation
from reports.jobs import run_rollup
from reports.tenant_report import ReportQuery, report
from service.cli.main import DEFAULT_PRICES
from service.http import dashboard_format
from service.http.app import create_app
from service.http.dashboard_reports import page_rows, rollup_state
from service.keys import create_key
from service.settings import Settings
from tests.billing_helpers import add_renders
from tests.conftest import ledger_with_prices, serving
from tests.test_allocation import h100_pool

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "service" / "grafana" / "renderledger.json"
CHROMIUM = ("chromium", "/usr/bin/chromium")
PERIOD = {"from": "2026-10-01", "to": "2026-10-31"}  # the period before: 2026-09-01 to 10-01
CHARTS = ("cost per render by stage", "spend per day", "cache savings and waste")


# -- a seeded ledger -------------------------------------------------------------------------


def _render(tenant: str, use_case: str, at: datetime, i: int, unet: str) -> list[CostEvent]:
    """One render as the renderer meters it: five stages, a cached encoder, an outcome."""
    render = uuid.uuid4()
    hit = i % 3 != 0

    def event(**kw: Any) -> CostEvent:
        return unet_event(tenant, render, use_case=use_case, occurred_at=at, **kw)

    return [
        event(stage="caption_llm", sku="llm.gpt-4o-mini.input_token", quantity=Decimal(80)),
        event(
            stage="text_encoder",
            quantity=Decimal(0) if hit else Decimal("0.02"),
            cache="hit" if hit else "miss",
            baseline_quantity=Decimal("0.02"),
        ),
        event(stage="unet", quantity=Decimal(unet)),
        event(stage="vae_decode", quantity=Decimal("0.15")),
        event(stage="postprocess", sku="cpu.vcpu.second", quantity=Decimal("0.05")),
        event(stage="storage", sku="s3.put_request", quantity=Decimal(1)),
        event(
            stage="render",
            sku="render.image",
            outcome="failed" if i % 9 == 4 else "delivered",
            attributes={"latency_ms": 1400 + 37 * (i % 11)},
        ),
    ]


def _seed(ledger: Ledger, tenant: str, unet_now: str) -> None:
    events: list[CostEvent] = []
    start = datetime(2026, 9, 1, 10, tzinfo=UTC)
    for day in range(60):  # September (the period before) and October
        at = start + timedelta(days=day)
        unet = "2.0" if at.month == 9 else unet_now
        for i in range(3 + day % 3):
            events += _render(tenant, "ecommerce", at + timedelta(minutes=i), day + i, unet)
        for i in range(2):
            events += _render(tenant, "social", at + timedelta(minutes=30 + i), day * 7 + i, "1.2")
    for chunk in range(0, len(events), 5000):
        ledger.append(events[chunk : chunk + 5000])


class Seeded:
    def __init__(self, ledger: Ledger, http: httpx.Client) -> None:
        self.tenant = f"t-{uuid.uuid4().hex[:12]}"
        self.other = f"t-{uuid.uuid4().hex[:12]}"
        for book in sorted((DEFAULT_PRICES.parent / "whatif").glob("*.toml")):
            ledger.load_prices(load_price_book_file(book))
        _seed(ledger, self.tenant, "2.6")
        _seed(ledger, self.other, "3.1")
        run_rollup(ledger.engine)
        self.key = create_key(ledger.engine, self.tenant, ["read"], "dashboard test")
        self.other_key = create_key(ledger.engine, self.other, ["read"], "dashboard test")
        self.alert = uuid.uuid4()
        with connection(ledger.engine, transaction=True) as raw:
            append(
                raw,
                self.alert,
                self.tenant,
                "ecommerce",
                "unit_cost",
                "opened",
                {
                    "message": "ecommerce cost per render +30% (0.0030 → 0.0039 USD per render)",
                    "currency": "USD",
                    "value": 0.0039,
                    "baseline": 0.0030,
                    "change": 0.3,
                    "stages": [{"stage": "unet", "share": 1.0, "change_nanos": 900000.0}],
                    "changes": [
                        {"attribute": "precision", "before": "int8", "after": "fp16", "share": 1}
                    ],
                },
                currency="USD",
            )
        budget = [
            {"amount": "40", "currency": "USD"},
            {"amount": "5", "currency": "USD", "use_case": "social"},
        ]
        http.put(f"/v1/tenants/{self.tenant}/budgets", json=budget).raise_for_status()
        for month in ("2026-09", "2026-10"):
            r = http.post(f"/v1/tenants/{self.tenant}/invoices/{month}/finalize")
            assert r.status_code in (200, 201), r.text


@pytest.fixture(scope="module")
def seeded(ledger: Ledger, api_base: str, admin_key: str) -> Seeded:
    headers = {"authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=api_base, timeout=30, headers=headers) as http:
        return Seeded(ledger, http)


# -- the browser -----------------------------------------------------------------------------


def _chromium() -> str:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "Debian's chromium is not installed: `make install` (or `make browser`) installs it "
        "(apt-get install chromium); the dashboard's browser tests cannot run without it",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = _chromium()
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()


class Visit:
    """A page in a fresh browser context, recording every URL it asked for."""

    def __init__(self, browser: Browser, base: str, tmp_path: Path) -> None:
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        self.page: Page = self.context.new_page()
        self.base, self.tmp_path = base, tmp_path
        self.urls: list[str] = []
        self.page.on("request", lambda r: self.urls.append(r.url))

    def login(self, key: str, path: str = "/dashboard") -> None:
        self.page.goto(f"{self.base}{path}")
        assert "/dashboard/login" in self.page.url
        self.page.fill("#api_key", key)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=self.tmp_path / f"{name}.png", full_page=True)

    def close(self, *keys: str) -> None:
        self.context.close()
        for url in self.urls:
            assert not any(k in url or k.split("_")[-1] in url for k in keys), url


@pytest.fixture
def visit(browser: Browser, api_base: str, tmp_path: Path) -> Iterator[Visit]:
    v = Visit(browser, api_base, tmp_path)
    yield v
    v.context.close()


def _query(params: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())


def _api_row(base: str, key: str, tenant: str, params: dict[str, str]) -> dict[str, Any]:
    group = "use_case" if "use_case" in params else ""
    query = {"from": params["from"], "to": params["to"], "group_by": group}
    r = httpx.get(
        f"{base}/v1/tenants/{tenant}/report",
        params=query | {"compare": "previous"},
        headers={"x-api-key": key},
    )
    r.raise_for_status()
    rows = [x for x in r.json()["rows"] if x.get("use_case") == params.get("use_case")]
    assert len(rows) == 1
    return rows[0]


def _tiles(page: Page) -> dict[str, tuple[str, str, str]]:
    out = {}
    for tile in page.locator(".tile").all():
        metric = tile.get_attribute("data-metric") or ""
        value = tile.get_attribute("data-value") or ""
        text = tile.locator(".tile-value").inner_text()
        out[metric] = (value, tile.get_attribute("data-change") or "", text)
    return out


def _check_tiles(page: Page, api: dict[str, Any]) -> None:
    tiles = _tiles(page)
    cpr = api["cost_per_delivered_render"]
    value, changed, text = tiles["cost_per_delivered_render"]
    assert value == cpr["amount"]
    assert text.replace("\xa0", " ").strip() == f"{dashboard_format.amount(cpr['amount'])} USD"
    assert changed == repr(api["previous"]["cost_per_delivered_render_change"])
    assert tiles["latency_p95_ms"][0] == repr(api["latency_p95_ms"])
    assert tiles["latency_p95_ms"][2].strip() == dashboard_format.milliseconds(
        api["latency_p95_ms"]
    )
    assert tiles["cache_hit_rate"][0] == repr(api["cache_hit_rate"])
    assert tiles["cache_hit_rate"][2].strip() == dashboard_format.percent(api["cache_hit_rate"])
    assert tiles["utilisation"][0] == (
        "" if api.get("utilisation") is None else repr(api["utilisation"])
    )


# -- the tests -------------------------------------------------------------------------------


def test_a_tenant_signs_in_and_sees_its_page_drawn_with_the_apis_numbers(
    visit: Visit, seeded: Seeded, api_base: str
) -> None:
    visit.login(seeded.key, f"/dashboard/tenants/{seeded.tenant}?{_query(PERIOD)}")
    page = visit.page
    assert page.url.endswith(f"/dashboard/tenants/{seeded.tenant}?{_query(PERIOD)}")
    for chart in CHARTS:
        marks = page.locator(f'svg[data-chart="{chart}"] .mark')
        assert marks.count() > 0, chart
    assert page.locator('svg[data-chart="what-if"] .mark').count() == 2
    assert page.locator('svg[data-chart="budgets"] .mark').count() == 2
    stages = set(
        page.locator('svg[data-chart="cost per render by stage"] .mark').evaluate_all(
            "marks => marks.map(m => m.dataset.series)"
        )
    )
    assert {"unet", "vae_decode", "caption_llm", "postprocess", "storage"} <= stages
    _check_tiles(page, _api_row(api_base, seeded.key, seeded.tenant, PERIOD))
    visit.shot("tenant")
    visit.close(seeded.key)


def test_a_filter_in_the_url_changes_the_tiles(visit: Visit, seeded: Seeded, api_base: str) -> None:
    visit.login(seeded.key, f"/dashboard/tenants/{seeded.tenant}?{_query(PERIOD)}")
    everything = _tiles(visit.page)
    social = PERIOD | {"use_case": "social"}
    visit.page.goto(f"{api_base}/dashboard/tenants/{seeded.tenant}?{_query(social)}")
    assert visit.page.locator("select[name=use_case]").input_value() == "social"
    only_social = _tiles(visit.page)
    assert only_social["cost_per_delivered_render"] != everything["cost_per_delivered_render"]
    _check_tiles(visit.page, _api_row(api_base, seeded.key, seeded.tenant, social))
    # The form writes the view into the URL, so it can be shared.
    visit.page.select_option("select[name=use_case]", "ecommerce")
    with visit.page.expect_navigation():
        visit.page.click(".filters button[type=submit]")
    assert "use_case=ecommerce" in visit.page.url
    ecommerce = PERIOD | {"use_case": "ecommerce"}
    _check_tiles(visit.page, _api_row(api_base, seeded.key, seeded.tenant, ecommerce))
    visit.shot("filtered")
    visit.close(seeded.key)


def test_an_alert_is_acknowledged_from_the_page(
    visit: Visit, seeded: Seeded, api_base: str, admin_key: str
) -> None:
    visit.login(seeded.key, f"/dashboard/tenants/{seeded.tenant}?{_query(PERIOD)}")
    row = visit.page.locator(f'tr[data-alert="{seeded.alert}"]')
    assert row.locator(".status").inner_text() == "open"
    assert "precision: int8 → fp16" in row.inner_text()
    with visit.page.expect_navigation():
        row.locator("button", has_text="Acknowledge").click()
    assert visit.page.url.endswith(f"/dashboard/tenants/{seeded.tenant}?{_query(PERIOD)}")
    row = visit.page.locator(f'tr[data-alert="{seeded.alert}"]')
    assert row.locator(".status").inner_text() == "acknowledged"
    alert = httpx.get(
        f"{api_base}/v1/alerts/{seeded.alert}", headers={"x-api-key": admin_key}
    ).json()
    assert alert["status"] == "acknowledged"
    assert alert["acknowledged_by"].startswith("key:")
    visit.shot("acknowledged")
    visit.close(seeded.key)


def test_an_invoice_pdf_downloads_from_the_page(visit: Visit, seeded: Seeded) -> None:
    visit.login(seeded.key, f"/dashboard/tenants/{seeded.tenant}?{_query(PERIOD)}")
    row = visit.page.locator('tr[data-invoice="2026-10"]')
    assert "finalized" in row.inner_text()
    with visit.page.expect_download() as info:
        row.locator("a", has_text="PDF").click()
    saved = visit.tmp_path / "invoice.pdf"
    info.value.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF")
    assert info.value.suggested_filename.endswith(".pdf")
    visit.shot("invoices")
    visit.close(seeded.key)


def test_another_tenants_page_answers_as_an_unknown_one(
    visit: Visit, seeded: Seeded, api_base: str
) -> None:
    visit.login(seeded.key)
    assert visit.page.url.startswith(f"{api_base}/dashboard/tenants/{seeded.tenant}?")
    foreign = visit.page.goto(f"{api_base}/dashboard/tenants/{seeded.other}")
    foreign_text = visit.page.locator("main").inner_text()
    unknown = visit.page.goto(f"{api_base}/dashboard/tenants/t-never-seen-0")
    unknown_text = visit.page.locator("main").inner_text()
    assert foreign is not None
    assert unknown is not None
    assert foreign.status == unknown.status == 404
    assert foreign_text.replace(seeded.other, "X") == unknown_text.replace("t-never-seen-0", "X")
    assert seeded.other not in (visit.page.content().replace("t-never-seen-0", ""))
    visit.shot("foreign")
    visit.close(seeded.key)


def test_an_admin_sees_every_tenant_ranked_and_the_pools(
    visit: Visit, seeded: Seeded, admin_key: str, api_base: str
) -> None:
    visit.login(admin_key, f"/dashboard?{_query(PERIOD)}")
    page = visit.page
    assert page.locator('svg[data-chart="tenants by spend"] .mark').count() >= 2
    assert page.locator('svg[data-chart="tenants by change in cost per render"] .mark').count() >= 2
    assert page.locator('svg[data-chart="pools by utilisation"]').count() == 1
    ranking = httpx.get(
        f"{api_base}/v1/report/tenants", params=PERIOD, headers={"x-api-key": admin_key}
    ).json()["tenants"]
    mine = next(t for t in ranking if t["tenant"] == seeded.tenant)
    cell = page.locator(f'tr[data-tenant="{seeded.tenant}"] td[data-value]').first
    assert cell.get_attribute("data-value") == mine["cost"]["amount"]
    with page.expect_navigation():
        page.click(f'tr[data-tenant="{seeded.tenant}"] a')
    assert f"/dashboard/tenants/{seeded.tenant}?from=2026-10-01&to=2026-10-31" in page.url
    assert page.locator('svg[data-chart="spend per day"] .mark').count() > 0
    visit.page.goto(f"{api_base}/dashboard?{_query(PERIOD)}")
    visit.shot("admin")
    visit.close(admin_key)


# -- over plain HTTP ---------------------------------------------------------------------------


def _login(base: str, key: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{base}/dashboard/login",
        content=f"api_key={key}&next=/dashboard",
        headers={"content-type": "application/x-www-form-urlencoded", **headers},
    )


def test_the_cookie_is_httponly_samesite_strict_and_secure_over_https(
    seeded: Seeded, api_base: str
) -> None:
    r = _login(api_base, seeded.key)
    assert r.status_code == 303
    assert seeded.key not in r.headers["location"]
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http on loopback: a Secure cookie would not return
    # Behind a TLS proxy (uvicorn trusts X-Forwarded-Proto from loopback) it is Secure.
    secure = _login(api_base, seeded.key, **{"x-forwarded-proto": "https"})
    assert "Secure" in secure.headers["set-cookie"]
    out = httpx.post(f"{api_base}/dashboard/logout", cookies=r.cookies)
    assert out.status_code == 303
    assert 'rl_dashboard_key=""' in out.headers["set-cookie"]


def test_a_bad_key_is_refused_and_a_page_without_a_cookie_goes_to_the_form(
    seeded: Seeded, api_base: str, ledger: Ledger
) -> None:
    refused = _login(api_base, "rlk_000000000000_nope")
    assert refused.status_code == 401
    assert "set-cookie" not in refused.headers
    ingest_only = create_key(ledger.engine, seeded.tenant, ["ingest"], "dashboard test")
    assert _login(api_base, ingest_only).status_code == 401
    page = httpx.get(f"{api_base}/dashboard/tenants/{seeded.tenant}?from=2026-10-01")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/dashboard/login?next=")
    # A login from another site's form is refused, whatever the browser did with the cookie.
    assert _login(api_base, seeded.key, origin="http://evil.example").status_code == 403


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("href", "src", "action") and v]


def test_the_key_never_appears_in_a_url_of_any_page(seeded: Seeded, api_base: str) -> None:
    r = _login(api_base, seeded.key)
    secret = seeded.key.split("_")[-1]
    with httpx.Client(base_url=api_base, cookies=r.cookies) as client:
        for path in (
            f"/dashboard/tenants/{seeded.tenant}?{_query(PERIOD)}",
            f"/dashboard/tenants/{seeded.tenant}",
            "/dashboard/login",
        ):
            page = client.get(path, follow_redirects=True)
            assert page.status_code == 200
            assert secret not in page.text
            links = _Links()
            links.feed(page.text)
            assert links.urls
            assert all(secret not in u and not urlsplit(u).netloc for u in links.urls)
            assert secret not in str(page.url)


def test_docs_are_served_without_any_other_host(api_base: str) -> None:
    for path in ("/docs", "/redoc"):
        page = httpx.get(f"{api_base}{path}")
        assert page.status_code == 200
        assets = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
        assert len(assets) >= 2, page.text
        for url in assets:
            assert not urlsplit(url).netloc, url
            assert url.startswith("/"), url
            assert httpx.get(f"{api_base}{url}").status_code == 200, url


def test_the_grafana_board_queries_only_metrics_that_metrics_exposes(
    seeded: Seeded, api_base: str, admin_key: str
) -> None:
    board = json.loads(BOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 6
    used = {m for e in exprs for m in re.findall(r"\brenderledger_[a-z_]+", e)}
    text = httpx.get(f"{api_base}/metrics", headers={"x-api-key": admin_key}).text
    exposed = set(re.findall(r"^# TYPE (\S+) (\w+)", text, re.M))
    names = {n for n, _ in exposed}
    # A histogram or counter is queried by its samples' names.
    names |= {
        f"{n}{s}" for n, t in exposed if t == "histogram" for s in ("_bucket", "_sum", "_count")
    }
    names |= {f"{n}_total" for n, t in exposed if t == "counter"}
    assert used <= names, used - names


def _tile_value(client: httpx.Client, path: str, metric: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    found = re.search(rf'data-metric="{re.escape(metric)}"[^>]*data-value="([^"]*)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_a_page_viewed_again_shows_what_a_new_rollup_brought(
    api_base: str, ledger: Ledger, tenant: str
) -> None:
    """Rows are kept between views only while the rollups stand still."""
    at = datetime(2026, 10, 5, 9, tzinfo=UTC)
    add_renders(ledger, tenant, at, 3, seconds="2.0")
    run_rollup(ledger.engine)
    key = create_key(ledger.engine, tenant, ["read"], "dashboard test")
    path = f"/dashboard/tenants/{tenant}?{_query(PERIOD)}"
    with httpx.Client(base_url=api_base, cookies=_login(api_base, key).cookies) as client:
        first = _tile_value(client, path, "cost_per_delivered_render")
        assert _tile_value(client, path, "cost_per_delivered_render") == first
        add_renders(ledger, tenant, at, 1, seconds="6.0")
        run_rollup(ledger.engine)
        again = _tile_value(client, path, "cost_per_delivered_render")
    assert again != first
    assert again == _api_row(api_base, key, tenant, PERIOD)["cost_per_delivered_render"]["amount"]


def test_the_formatter_writes_the_apis_text_grouped_never_rounded() -> None:
    assert dashboard_format.amount("1234567.891000000") == "1,234,567.891"
    assert dashboard_format.amount("-0.000500000") == "−0.0005"
    assert dashboard_format.amount("12.000000000") == "12"
    assert dashboard_format.amount("0.000000001") == "0.000000001"
    assert dashboard_format.percent(0.81234) == "81.2 %"
    assert dashboard_format.change(-0.25) == "−25.0 %"
    assert dashboard_format.points(0.8, 0.75) == "+5.0 pt"
    assert dashboard_format.minor(123456, "USD") == "1,234.56 USD"
    assert dashboard_format.minor(1500, "JPY") == "1,500 JPY"
    assert dashboard_format.money(None) == dashboard_format.DASH


def test_docs_in_the_browser_ask_no_other_host(visit: Visit, api_base: str) -> None:
    blocked: list[str] = []  # refused by the page's own policy: never left the browser
    visit.page.on(
        "requestfailed",
        lambda r: blocked.append(r.url) if "csp" in (r.failure or "").lower() else None,
    )
    drawn = {"/docs": ".swagger-ui .opblock", "/redoc": "text=Download OpenAPI specification"}
    for path, selector in drawn.items():
        visit.page.goto(f"{api_base}{path}")
        visit.page.wait_for_selector(selector, timeout=20_000)
        visit.page.wait_for_load_state("networkidle")
        visit.shot(path.strip("/"))
    local = (api_base, "data:", f"blob:{api_base}")
    elsewhere = [u for u in visit.urls if not u.startswith(local) and u not in blocked]
    assert not elsewhere, elsewhere


def test_a_pages_by_day_rows_are_the_report_apis(seeded: Seeded, ledger: Ledger) -> None:
    for groups in ((), ("use_case",)):
        q = ReportQuery(seeded.tenant, date(2026, 9, 20), date(2026, 10, 19), groups)
        with connection(ledger.engine) as raw:
            whole = report(raw, replace(q, group_by=(*groups, "day")))
            state = rollup_state(raw)
        rows = page_rows(ledger.engine, (*state, "by-day test"), q, None, None)
        # The charts by day show no latency, so the page leaves the percentiles out; every
        # other figure is the API's.
        latency = {"latency_p50_ms", "latency_p95_ms"}
        assert [r.model_dump(exclude=latency) for r in rows.days] == [
            r.model_dump(exclude=latency) for r in whole
        ]
        assert any(r.latency_p95_ms is not None for r in whole)
        assert all(r.latency_p50_ms is None and r.latency_p95_ms is None for r in rows.days)
        assert len({r.day for r in rows.days}) == 29


def _pooled(ledger: Ledger, tenant: str) -> None:
    """Five October hours of two H100s held, each a third busy with the tenant's renders."""
    load_pools(ledger.engine, [h100_pool()])
    events: list[CostEvent] = []
    for day in range(5):
        hour = datetime(2026, 10, 3 + day * 5, 9, tzinfo=UTC)
        span = CapacityHeld(
            event_id=uuid.uuid4(),
            pool="h100-a",
            starts_at=hour,
            ends_at=hour + timedelta(hours=1),
            gpus=Decimal(2),
        )
        record(ledger.engine, [span])
        for i in range(4):
            render = uuid.uuid4()
            at = hour + timedelta(minutes=5 + i)
            kw: dict[str, Any] = {"use_case": "ecommerce", "occurred_at": at}
            events += [
                unet_event(
                    tenant, render, quantity=Decimal(600), attributes={"pool": "h100-a"}, **kw
                ),
                unet_event(
                    tenant,
                    render,
                    stage="render",
                    sku="render.image",
                    outcome="delivered",
                    attributes={"latency_ms": 2000 + 100 * i, "pool": "h100-a"},
                    **kw,
                ),
            ]
    ledger.append(events)
    run_rollup(ledger.engine)
    run_allocation(ledger.engine)


def test_capacity_shows_as_utilisation_fully_loaded_cost_and_break_even(
    browser: Browser, fresh_database: str, tmp_path: Path
) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    for book in sorted((DEFAULT_PRICES.parent / "whatif").glob("*.toml")):
        ledger.load_prices(load_price_book_file(book))
    _pooled(ledger, "acme")
    admin = create_key(engine, None, ["admin"], "dashboard test")
    settings = Settings(database_url=fresh_database)
    try:
        with serving(create_app(settings, ledger, schedule=False)) as base:
            visit = Visit(browser, base, tmp_path)
            visit.login(admin, f"/dashboard/tenants/acme?{_query(PERIOD)}")
            api = _api_row(base, admin, "acme", PERIOD)
            tiles = _tiles(visit.page)
            assert api["utilisation"] is not None
            assert tiles["utilisation"][0] == repr(api["utilisation"])
            loaded = api["fully_loaded"]["cost_per_delivered_render"]["amount"]
            assert tiles["fully_loaded.cost_per_delivered_render"][0] == loaded
            assert loaded != api["cost_per_delivered_render"]["amount"]
            assert visit.page.locator("table.break-even tr[data-pool=h100-a]").count() == 1
            visit.shot("capacity")
            visit.page.goto(f"{base}/dashboard?{_query(PERIOD)}")
            assert visit.page.locator('svg[data-chart="pools by utilisation"] .mark').count() == 1
            visit.shot("admin-pools")
            visit.close(admin)
    finally:
        engine.dispose()
