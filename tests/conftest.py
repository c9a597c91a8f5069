"""One throwaway PostgreSQL per test session, built by running the migrations.

The ledger is append-only by design (no TRUNCATE, no DELETE), so tests do not roll back:
each test writes under its own tenant and its own fresh event ids, and asserts on those.
Tests that must break the chain get a database of their own (``fresh_database``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
import uvicorn
from moto.server import ThreadedMotoServer
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from ingest.sample import unet_event
from ledger import database
from ledger.events import CostEvent
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from reports.billing.parties import Issuer
from service.cli.main import DEFAULT_PRICES
from service.http.app import create_app
from service.settings import Settings, get_settings

# Finalizing needs an issuer; the test app and CLI have this one.
TEST_ISSUER = Issuer(legal_name="Test Issuer Ltd", address=("1 Test Road",), country="GB")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL to a server where we may create databases: DATABASE_URL, or an embedded one."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    with database.throwaway_server("renderledger-test-") as url:
        yield url


def _create_database(server_url: str, name: str) -> str:
    with psycopg.connect(database.libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def db_url(server_url: str) -> str:
    url = _create_database(server_url, f"rl_test_{os.getpid()}")
    database.migrate(url)
    return url


@pytest.fixture
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"rl_fresh_{uuid.uuid4().hex[:10]}"
    url = _create_database(server_url, name)
    database.migrate(url)
    yield url
    with psycopg.connect(database.libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = database.make_engine(db_url, app_role="renderledger_app")
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def owner(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The migrating (superuser) role, for what the application role must not do."""
    with psycopg.connect(database.libpq_url(db_url), autocommit=True) as conn:
        yield conn


def ledger_with_prices(engine: Engine) -> Ledger:
    ledger = Ledger(engine)
    ledger.load_prices(load_price_book_file(DEFAULT_PRICES))
    return ledger


@pytest.fixture(scope="session")
def ledger(engine: Engine) -> Ledger:
    return ledger_with_prices(engine)


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


EventFactory = Callable[..., CostEvent]


@pytest.fixture
def make_event(tenant: str) -> EventFactory:
    render = uuid.uuid4()

    def make(**overrides: Any) -> CostEvent:
        defaults = {
            "use_case": "ecommerce",
            "quantity": Decimal("2.5"),
            "attributes": {"model": "sdxl", "steps": 25},
        }
        return unet_event(tenant, render, **(defaults | overrides))

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def api_base(ledger: Ledger, db_url: str) -> Iterator[str]:
    """The real app under uvicorn on a loopback port, for real HTTP."""
    settings = Settings(database_url=db_url)
    settings.ingest.max_body_bytes = 4 * 1024 * 1024
    settings.billing.issuer = TEST_ISSUER
    with serving(create_app(settings, ledger, schedule=False)) as base:
        yield base


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    """The ``renderledger`` command on the session's database (no stray .env is read)."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("RENDERLEDGER_BILLING__ISSUER__LEGAL_NAME", TEST_ISSUER.legal_name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def admin_key(ledger: Ledger) -> str:
    from service.keys import create_key

    return create_key(ledger.engine, None, ["admin"], "tests")


@pytest.fixture
def http(api_base: str, admin_key: str) -> Iterator[httpx.Client]:
    """An admin's client; tests of keys and tenants make their own."""
    headers = {"authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=api_base, timeout=30, headers=headers) as client:
        yield client


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    yield client
    server.stop()
