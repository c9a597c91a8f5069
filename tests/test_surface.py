"""What the API shows before any key or data is involved: the public pages, and the answer
when the database is gone (503 with Retry-After, not 500), over real HTTP under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg

from ingest.sample import unet_event
from ledger import database
from service.http.app import create_app
from service.keys import create_key
from service.settings import Settings
from tests.conftest import free_port, serving


@contextmanager
def serving_settings(settings: Settings) -> Iterator[str]:
    """An app that makes its own engine from ``settings``, as ``renderledger serve`` does."""
    with serving(create_app(settings, schedule=False)) as base:
        yield base


def _requests(key: str) -> dict[str, Any]:
    auth = {"authorization": f"Bearer {key}"}
    event = unet_event("acme").model_dump(mode="json")
    return {
        "POST /v1/events": lambda c: c.post("/v1/events", json=[event], headers=auth),
        "GET /v1/events": lambda c: c.get("/v1/events", headers=auth),
        "GET report": lambda c: c.get("/v1/tenants/acme/report", headers=auth),
        "GET /metrics": lambda c: c.get("/metrics", headers=auth),
        "GET /healthz": lambda c: c.get("/healthz"),
    }


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert "database cannot answer now" in r.json()["detail"]["message"]


def test_a_database_that_never_answers_is_503_with_retry_after() -> None:
    closed = free_port()  # bound, then let go: nothing listens on it
    settings = Settings(database_url=f"postgresql://nobody@127.0.0.1:{closed}/ledger")
    with serving_settings(settings) as base, httpx.Client(base_url=base, timeout=30) as c:
        for name, call in _requests("rlk_abc_def").items():
            r = call(c)
            assert r.status_code == 503, name
            _assert_unavailable(r)


def test_a_database_that_goes_away_is_503(fresh_database: str, server_url: str) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    key = create_key(engine, None, ["admin"], "surface")
    engine.dispose()
    with (
        serving_settings(Settings(database_url=fresh_database)) as base,
        httpx.Client(base_url=base, timeout=30) as c,
    ):
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/events", headers={"authorization": f"Bearer {key}"}).status_code == 200
        # Gone while the app holds pooled connections to it, as a stopped server is.
        name = fresh_database.rsplit("/", 1)[1].split("?")[0]
        with psycopg.connect(database.libpq_url(server_url), autocommit=True) as owner:
            owner.execute(f"DROP DATABASE {name} WITH (FORCE)")
        for call in _requests(key).values():
            _assert_unavailable(call(c))


def test_only_healthz_and_the_docs_answer_without_a_key(api_base: str) -> None:
    with httpx.Client(base_url=api_base, timeout=30) as c:
        for public in ("/healthz", "/docs", "/redoc", "/openapi.json"):
            assert c.get(public).status_code == 200, public
        schema = c.get("/openapi.json").json()
        for path in schema["paths"]:
            if path == "/healthz":
                continue
            assert c.get(path.replace("{", "x").replace("}", "")).status_code in (401, 405), path
        assert "503" in schema["paths"]["/v1/events"]["post"]["responses"]
