"""Hypothesis as a hostile tenant: whatever it posts, everyone else's ledger still works.

After every generated case: the server answers, ``verify`` passes over the whole log, a
rollup run succeeds and the tenant's report renders. The suite has its own database, so
``verify`` reads only what these cases wrote and stays fast.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ingest.sample import unet_event
from ledger import database
from ledger.chain import verify
from ledger.store import Ledger
from reports.jobs import run_rollup
from service.http.app import create_app
from service.keys import create_key
from service.settings import Settings
from tests.conftest import _create_database, ledger_with_prices, serving

TENANT = "hostile"
ANSWERS = {200, 400, 409, 413, 422}


@dataclass
class Stand:
    ledger: Ledger
    client: httpx.Client


@pytest.fixture(scope="module")
def stand(server_url: str) -> Iterator[Stand]:
    name = f"rl_hostile_{uuid.uuid4().hex[:8]}"
    url = _create_database(server_url, name)
    database.migrate(url)
    engine = database.make_engine(url, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    key = create_key(engine, TENANT, ["ingest", "read"], "hostile suite")
    headers = {"authorization": f"Bearer {key}"}
    app = create_app(Settings(database_url=url), ledger, schedule=False)
    with serving(app) as base, httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        yield Stand(ledger, c)
    engine.dispose()
    with psycopg.connect(database.libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def everyone_still_served(stand: Stand, response: httpx.Response) -> None:
    assert response.status_code in ANSWERS, response.text[:500]
    event(f"HTTP {response.status_code}")
    assert len(response.content) < 100_000
    assert stand.client.get("/healthz").status_code == 200
    result = verify(stand.ledger.engine)
    assert result.ok, result.broken
    run_rollup(stand.ledger.engine)
    report = stand.client.get(f"/v1/tenants/{TENANT}/report", params={"group_by": "use_case"})
    assert report.status_code == 200, report.text[:500]
    render = stand.client.get(f"/v1/events?tenant_id={TENANT}&limit=5")
    assert render.status_code == 200


# Numbers spelled as producers spell them, including what JSONB rewrites.
spelled_numbers = st.one_of(
    st.sampled_from(
        [
            "-0.0",
            "1e16",
            "1E+300",
            "1.5e300",
            "-1.5e-300",
            "123456789012345678.0",
            "0.1e1",
            "99999999999999999999",
            "-9223372036854775809",
            "18446744073709551615",
            "1e-400",
            "NaN",
            "Infinity",
            "-0",
            "0e0",
            "5e-324",
            "1.7976931348623157e308",
        ]
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: orjson.dumps(f).decode()),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
json_values: st.SearchStrategy[str] = st.recursive(
    st.one_of(
        spelled_numbers,
        st.text(max_size=30).map(lambda s: orjson.dumps(s).decode()),
        st.sampled_from(["true", "false", "null", '"\\u0000"', '"\\ud800"']),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.dictionaries(
            st.sampled_from(["a", "b", "latency_ms", "wall_s", "model", "x"]), inner, max_size=4
        ).map(lambda d: "{" + ",".join(f'"{k}": {v}' for k, v in d.items()) + "}"),
    ),
    max_leaves=12,
)
attribute_objects = st.dictionaries(
    st.sampled_from(
        ["latency_ms", "wall_s", "model", "precision", "gpu_type", "pipeline_version", "x", "y"]
    ),
    json_values,
    max_size=5,
).map(lambda d: "{" + ",".join(f'"{k}": {v}' for k, v in d.items()) + "}")
quantities = st.one_of(
    st.sampled_from(
        ["0", "-1", "1e19", "9e18", "909090909", "1e-18", "1e-19", "NaN", "1e400", '"12"', "true"]
    ),
    st.decimals(allow_nan=False, allow_infinity=False, places=6).map(lambda d: f'"{d}"'),
)


def event_json(
    quantity: str, attributes: str, stage: str, render: uuid.UUID, tenant: str = TENANT
) -> str:
    e = unet_event(tenant, render)
    doc = orjson.loads(orjson.dumps(e.model_dump(mode="json", exclude={"attributes", "quantity"})))
    doc["stage"] = stage
    if stage == "render":
        doc |= {"sku": "cpu.vcpu.second", "outcome": "delivered"}
    text = orjson.dumps(doc).decode()
    return text[:-1] + f', "quantity": {quantity}, "attributes": {attributes}}}'


HOSTILE = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HOSTILE
@given(
    events=st.lists(
        st.tuples(quantities, attribute_objects, st.sampled_from(["unet", "render", "vae_decode"])),
        min_size=1,
        max_size=6,
    ),
    ndjson=st.booleans(),
)
def test_any_events_leave_everyone_served(
    stand: Stand, events: list[tuple[str, str, str]], ndjson: bool
) -> None:
    render = uuid.uuid4()
    docs = [event_json(q, a, stage, render) for q, a, stage in events]
    if ndjson:
        response = stand.client.post(
            "/v1/events",
            content="\n".join(docs).encode(),
            headers={"content-type": "application/x-ndjson"},
        )
    else:
        response = stand.client.post("/v1/events", content=("[" + ",".join(docs) + "]").encode())
    everyone_still_served(stand, response)


@HOSTILE
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.lists(json_values, max_size=5).map(lambda xs: ("[" + ",".join(xs) + "]").encode()),
        json_values.map(str.encode),
    ),
    media=st.sampled_from(["application/json", "application/x-ndjson", "text/plain", ""]),
)
def test_any_body_leaves_everyone_served(stand: Stand, raw: bytes, media: str) -> None:
    headers: dict[str, Any] = {"content-type": media} if media else {}
    everyone_still_served(stand, stand.client.post("/v1/events", content=raw, headers=headers))


@HOSTILE
@given(
    count=st.integers(1, 3),
    quantity=st.decimals(min_value=Decimal(0), max_value=Decimal("909090909"), places=0),
    reverse=st.booleans(),
)
def test_near_limit_costs_and_reversals_leave_everyone_served(
    stand: Stand, count: int, quantity: Decimal, reverse: bool
) -> None:
    render = uuid.uuid4()
    events = [unet_event(TENANT, render, quantity=quantity) for _ in range(count)]
    if reverse:
        events.append(
            events[0].model_copy(update={"event_id": uuid.uuid4(), "reverses": events[0].event_id})
        )
    payload = orjson.dumps([e.model_dump(mode="json") for e in events])
    everyone_still_served(stand, stand.client.post("/v1/events", content=payload))
