"""API keys and tenant isolation: every endpoint × no key, bad key, wrong scope, other tenant;
a tenant's key is never an admin key."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ingest.sample import unet_event
from ledger.events import CostEvent
from ledger.store import Ledger
from reports.jobs import run_rollup
from service.keys import create_key, revoke_key


def _event(tenant: str, render: uuid.UUID) -> CostEvent:
    return unet_event(tenant, render, occurred_at=datetime(2026, 10, 3, tzinfo=UTC))


@pytest.fixture(scope="module")
def world(ledger: Ledger) -> dict[str, Any]:
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    render_a, render_b = uuid.uuid4(), uuid.uuid4()
    ledger.append([_event(a, render_a), _event(b, render_b)])
    run_rollup(ledger.engine)
    revoked = create_key(ledger.engine, a, ["read", "ingest"])
    revoke_key(ledger.engine, revoked)
    return {
        "a": a,
        "b": b,
        "render_a": render_a,
        "render_b": render_b,
        "a_read": create_key(ledger.engine, a, ["read"]),
        "a_ingest": create_key(ledger.engine, a, ["ingest"]),
        "b_all": create_key(ledger.engine, b, ["read", "ingest"]),
        "revoked": revoked,
    }


Call = Callable[[httpx.Client, dict[str, Any]], httpx.Response]

READS: dict[str, Call] = {
    "events by tenant": lambda c, w: c.get("/v1/events", params={"tenant_id": w["a"]}),
    "events by render": lambda c, w: c.get("/v1/events", params={"render_id": str(w["render_a"])}),
    "render trace": lambda c, w: c.get(f"/v1/renders/{w['render_a']}"),
    "report": lambda c, w: c.get(f"/v1/tenants/{w['a']}/report"),
}
WRITE: Call = lambda c, w: c.post(  # noqa: E731
    "/v1/events", json=[_event(w["a"], uuid.uuid4()).model_dump(mode="json")]
)
ALL = {**READS, "ingest": WRITE, "metrics": lambda c, w: c.get("/metrics")}


def _client(api_base: str, key: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api_base, headers=headers, timeout=30)


@pytest.mark.parametrize("endpoint", list(ALL))
@pytest.mark.parametrize("key", [None, "rlk_nope_nope", "garbage", "revoked"])
def test_no_valid_key_is_401(
    api_base: str, world: dict[str, Any], endpoint: str, key: str | None
) -> None:
    with _client(api_base, world.get(key or "", key)) as c:
        r = ALL[endpoint](c, world)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("endpoint", list(READS))
def test_another_tenants_resources_are_404(
    api_base: str, world: dict[str, Any], endpoint: str
) -> None:
    with _client(api_base, world["b_all"]) as c:
        assert READS[endpoint](c, world).status_code == 404
    with _client(api_base, world["a_read"]) as c:
        assert READS[endpoint](c, world).status_code == 200


@pytest.mark.parametrize("endpoint", list(READS))
def test_an_ingest_only_key_cannot_read(
    api_base: str, world: dict[str, Any], endpoint: str
) -> None:
    with _client(api_base, world["a_ingest"]) as c:
        assert READS[endpoint](c, world).status_code == 403


def test_writes_only_for_its_own_tenant(api_base: str, world: dict[str, Any]) -> None:
    with _client(api_base, world["a_read"]) as c:
        assert WRITE(c, world).status_code == 403  # no ingest scope
    with _client(api_base, world["b_all"]) as c:
        r = WRITE(c, world)
        assert r.status_code == 403
        assert r.json()["detail"]["errors"][0]["field"] == "tenant_id"
    with _client(api_base, world["a_ingest"]) as c:
        assert WRITE(c, world).status_code == 200


def test_a_tenant_listing_sees_only_its_events(api_base: str, world: dict[str, Any]) -> None:
    with _client(api_base, world["b_all"]) as c:
        events = c.get("/v1/events", params={"limit": 10_000}).json()["events"]
    assert events
    assert {e["tenant_id"] for e in events} == {world["b"]}


def test_metrics_need_admin(api_base: str, world: dict[str, Any], admin_key: str) -> None:
    with _client(api_base, world["a_read"]) as c:
        assert c.get("/metrics").status_code == 403
    with _client(api_base, admin_key) as c:
        assert c.get("/metrics").status_code == 200
    with _client(api_base, None) as c:
        assert c.get("/healthz").status_code == 200


def test_x_api_key_header_works_too(api_base: str, world: dict[str, Any]) -> None:
    with httpx.Client(base_url=api_base, headers={"x-api-key": world["a_read"]}) as c:
        assert READS["report"](c, world).status_code == 200


def test_keys_are_stored_as_hashes_and_revocation_is_immediate(
    ledger: Ledger, api_base: str, tenant: str
) -> None:
    from ledger.connections import connection

    key = create_key(ledger.engine, tenant, ["read"])
    with connection(ledger.engine) as raw:
        stored = raw.execute(
            "SELECT secret_sha256 FROM api_keys WHERE key_id = %s", (key.split("_")[1],)
        ).fetchone()
    assert stored is not None
    assert key.split("_", 2)[2].encode() not in bytes(stored[0])
    with _client(api_base, key) as c:
        assert c.get("/v1/events").status_code == 200
        assert revoke_key(ledger.engine, key)
        assert c.get("/v1/events").status_code == 401
    assert not revoke_key(ledger.engine, key)


def _as_other(world: dict[str, Any]) -> dict[str, Any]:
    """The same calls, aimed at tenant b's resources."""
    return {**world, "a": world["b"], "render_a": world["render_b"]}


ADMIN_ONLY: dict[str, Call] = {
    "metrics": lambda c, w: c.get("/metrics"),
    "finalize": lambda c, w: c.post(f"/v1/tenants/{w['a']}/invoices/2026-10/finalize"),
    "credit note": lambda c, w: c.post(
        f"/v1/tenants/{w['a']}/invoices/2026-10/credit-notes",
        json={"amount": "1.00", "reason": "x"},
    ),
}


def _cli_key(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, *args: str) -> Any:
    from typer.testing import CliRunner

    from service.cli.main import app
    from service.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["keys", "create", *args])
    finally:
        get_settings.cache_clear()


def test_a_key_made_with_tenant_never_reaches_another_tenant(
    api_base: str,
    db_url: str,
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    refused = _cli_key(db_url, monkeypatch, tmp_path, "--tenant", world["a"], "--scopes", "admin")
    assert refused.exit_code == 1
    assert "the admin scope reaches every tenant" in refused.output
    made = _cli_key(
        db_url, monkeypatch, tmp_path, "--tenant", world["a"], "--scopes", "ingest,read"
    )
    assert made.exit_code == 0, made.output
    with _client(api_base, made.output.strip()) as c:
        for name, call in READS.items():
            assert call(c, world).status_code == 200, name
            assert call(c, _as_other(world)).status_code == 404, name
        assert WRITE(c, world).status_code == 200
        assert WRITE(c, _as_other(world)).status_code == 403
        for name, call in ADMIN_ONLY.items():
            assert call(c, world).status_code == 403, name


def test_a_tenant_key_stored_with_admin_is_held_to_its_tenant(
    ledger: Ledger, api_base: str, world: dict[str, Any]
) -> None:
    """Keys made before ``create_key`` refused the admin scope with a tenant: the scope is
    void, not global."""
    from ledger.connections import connection
    from service.keys import _digest

    key_id, secret = uuid.uuid4().hex[:12], uuid.uuid4().hex
    with connection(ledger.engine, transaction=True) as raw:
        raw.execute(
            "INSERT INTO api_keys (key_id, secret_sha256, tenant_id, scopes, name) "
            "VALUES (%s, %s, %s, %s, 'old')",
            (key_id, _digest(secret), world["a"], ["admin", "read"]),
        )
    with _client(api_base, f"rlk_{key_id}_{secret}") as c:
        for name, call in READS.items():
            assert call(c, world).status_code == 200, name
            assert call(c, _as_other(world)).status_code == 404, name
        assert WRITE(c, _as_other(world)).status_code == 403
        for name, call in ADMIN_ONLY.items():
            assert call(c, world).status_code == 403, name
            assert call(c, _as_other(world)).status_code == 403, name
        alerts = c.get("/v1/alerts", params={"tenant": world["b"]})
        assert alerts.status_code == 404
