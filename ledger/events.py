"""The cost event as producers send it, and its canonical content hash."""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from ledger.money import canonical_decimal

TENANT_ID = r"[a-z0-9][a-z0-9_-]{0,62}"  # unanchored, for patterns that hold a tenant id
TENANT_PATTERN = rf"^{TENANT_ID}$"
USE_CASE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
MAX_ATTRIBUTES_BYTES = 16 * 1024
MAX_ATTRIBUTES_DEPTH = 8
MAX_FUTURE = timedelta(days=1)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Attributes that rollups, reports and alerts read: a wrong type here would stop their jobs.
DURATION_ATTRIBUTES = ("latency_ms", "wall_s")
LABEL_ATTRIBUTES = ("model", "precision", "gpu_type", "pipeline_version", "pipeline", "pool")
MAX_DURATION = 1e9
MAX_LABEL = 200


class Stage(StrEnum):
    TEXT_ENCODER = "text_encoder"
    CAPTION_LLM = "caption_llm"
    UNET = "unet"
    VAE_DECODE = "vae_decode"
    POSTPROCESS = "postprocess"
    STORAGE = "storage"
    CDN_EGRESS = "cdn_egress"
    RENDER = "render"


class Cache(StrEnum):
    HIT = "hit"
    MISS = "miss"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _stored_number(value: float, path: str) -> float | int:
    """The number PostgreSQL's JSONB will hand back for ``value``, or a ValueError.

    JSONB keeps numbers as NUMERIC and prints them without an exponent (``1e16`` comes back as
    the integer 10000000000000000, ``-0.0`` as ``0.0``). The content hash must be over what is
    stored, or ``verify`` fails for ever on an honest row, so the event holds that form from
    the start; a number whose stored form no reader can take back (past 64 bits) is refused.
    """
    value = float(value)  # an ExactNumber too: what matters is the double JSONB will hold
    if not math.isfinite(value):
        raise ValueError(f"{path}: {value} is not a finite number")
    exact = Decimal(orjson.dumps(value).decode())
    text = format(abs(exact) if exact.is_zero() else exact, "f")
    if "." in text:
        return float(text)
    if not INT64_MIN <= int(text) <= INT64_MAX:
        raise ValueError(f"{path}: {value} cannot be stored exactly; send it as a string")
    return int(text)


def _stored_form(value: Any, path: str) -> Any:
    if isinstance(value, float):
        return _stored_number(value, path)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{path}: contains a NUL character, which PostgreSQL cannot store")
        return value
    if isinstance(value, bool) or not isinstance(value, int | dict | list):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{path}: {value} does not fit in 64 bits; send it as a string")
        return value
    if isinstance(value, dict):
        return {_stored_form(k, path): _stored_form(v, f"{path}.{k}") for k, v in value.items()}
    return [_stored_form(v, f"{path}[{i}]") for i, v in enumerate(value)]


_FLAT = frozenset({str, int, bool, type(None)})


def _stored_attributes(value: dict[str, Any]) -> dict[str, Any]:
    return {_stored_form(k, k): _stored_form(v, k) for k, v in value.items()}


def _check_attributes(value: dict[str, Any]) -> dict[str, Any]:
    types = {type(v) for v in value.values()}
    flat = types <= _FLAT and (
        int not in types
        or all(INT64_MIN <= v <= INT64_MAX for v in value.values() if type(v) is int)
    )
    if not flat:  # floats and nesting: rewrite into the form JSONB hands back
        if _depth(value) > MAX_ATTRIBUTES_DEPTH:
            raise ValueError(f"nested deeper than {MAX_ATTRIBUTES_DEPTH} levels")
        value = _stored_attributes(value)
    try:
        encoded = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"not storable as JSON: {exc}") from exc
    if len(encoded) > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"larger than {MAX_ATTRIBUTES_BYTES} bytes as JSON")
    if flat and b"\\u0000" in encoded:
        _stored_attributes(value)  # a real NUL raises; an escaped backslash before u0000 passes
    return value


_DURATIONS = frozenset(DURATION_ATTRIBUTES)
_KNOWN = _DURATIONS | frozenset(LABEL_ATTRIBUTES)


def duration(value: object) -> float | None:
    """A duration attribute as a number the product can use, or None if it cannot.

    Ingest refuses what this cannot read; readers of older rows treat it as absent."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= MAX_DURATION else None  # NaN and inf fail here


def _check_known_attributes(attributes: dict[str, Any]) -> None:
    """Attributes the product reads are typed here, so no reader meets a value it cannot use."""
    for name in attributes.keys() & _KNOWN:
        v = attributes[name]
        if v is None:
            continue
        if name in _DURATIONS:
            if duration(v) is None:
                wanted = f"a number from 0 to {MAX_DURATION:g}"
                raise ValueError(f"attributes.{name}: must be {wanted}, got {v!r}"[:300])
        elif not (isinstance(v, str) and 0 < len(v) <= MAX_LABEL):
            wanted = f"text of 1 to {MAX_LABEL} characters"
            raise ValueError(f"attributes.{name}: must be {wanted}, got {v!r}"[:300])


class ExactNumber(float):
    """A JSON number that keeps its text, so a decimal field reads it exactly, not as a double
    (``ingest.parsing`` makes these when a body sends quantities as numbers)."""

    text: str

    def __new__(cls, text: str) -> ExactNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _exact_decimal(value: Any) -> Any:
    return Decimal(value.text) if isinstance(value, ExactNumber) else value


def _plain_zero(value: Decimal) -> Decimal:
    # 0E-100000 passes the places check but not PostgreSQL's binary NUMERIC format.
    return Decimal(0) if value.is_zero() else value


# Twelve digits before the point: sums of a million of them stay inside Polars' 38-digit
# decimals, which is how the rollups add quantities up.
Quantity = Annotated[
    Decimal,
    # Constraints first: pydantic then checks them in its core, not in Python (4× faster).
    Field(ge=0, allow_inf_nan=False, max_digits=30, decimal_places=18),
    BeforeValidator(_exact_decimal),
    AfterValidator(_plain_zero),
]
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]


class CostEvent(BaseModel):
    """One metered quantity of one SKU in one stage of one render, as its producer saw it."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    event_id: UUID
    tenant_id: Annotated[str, Field(pattern=TENANT_PATTERN)]
    use_case: Annotated[str, Field(pattern=USE_CASE_PATTERN)]
    render_id: UUID
    stage: Stage
    sku: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.:/-]{0,127}$")]
    quantity: Quantity
    occurred_at: AwareDatetime
    cache: Cache | None = None
    baseline_quantity: Quantity | None = None
    outcome: Outcome | None = None
    reverses: UUID | None = None
    attributes: Annotated[dict[str, Any], AfterValidator(_check_attributes)] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _occurred_plausibly(self) -> Self:
        # A clock a day fast is a skewed producer; a year off is a bug we must not bill.
        if self.occurred_at > datetime.now(UTC) + MAX_FUTURE:
            raise ValueError(f"occurred_at: {self.occurred_at.isoformat()} is in the future")
        if self.occurred_at < EARLIEST:
            raise ValueError(
                f"occurred_at: {self.occurred_at.isoformat()} is before {EARLIEST.year}"
            )
        return self

    @model_validator(mode="after")
    def _attributes_typed(self) -> Self:
        _check_known_attributes(self.attributes)
        return self

    @model_validator(mode="after")
    def _outcome_only_on_render(self) -> Self:
        if self.stage is Stage.RENDER and self.outcome is None and self.reverses is None:
            raise ValueError("outcome: a render event needs an outcome")
        if self.stage is not Stage.RENDER and self.outcome is not None:
            raise ValueError("outcome: only render events carry an outcome")
        return self

    def content_hash(self, version: int | None = None) -> bytes:
        return content_hash(
            self.event_id,
            self.tenant_id,
            self.use_case,
            self.render_id,
            self.stage.value,
            self.sku,
            self.quantity,
            self.occurred_at,
            self.cache.value if self.cache else None,
            self.baseline_quantity,
            self.outcome.value if self.outcome else None,
            self.reverses,
            self.attributes,
            version=version or CONTENT_VERSION,
        )


CONTENT_VERSION = 1
"""The canonical form new blocks are hashed in. Each block records its form (``blocks.
content_version``), so a later form can be introduced without making old blocks unverifiable:
add it below under the next number and keep every older one."""


def content_hash(
    event_id: UUID,
    tenant_id: str,
    use_case: str,
    render_id: UUID,
    stage: str,
    sku: str,
    quantity: Decimal,
    occurred_at: datetime,
    cache: str | None,
    baseline_quantity: Decimal | None,
    outcome: str | None,
    reverses: UUID | None,
    attributes: dict[str, Any],
    *,
    version: int = CONTENT_VERSION,
) -> bytes:
    """SHA-256 of the producer's content in one canonical spelling.

    Both the idempotency check and ``verify`` go through here, from a fresh event and
    from a stored row alike, so the two can never disagree on what "same content" means.
    """
    if version != 1:
        raise ValueError(f"no canonical form {version} (known: 1)")
    doc = (
        event_id,
        tenant_id,
        use_case,
        render_id,
        stage,
        sku,
        canonical_decimal(quantity),
        occurred_at.astimezone(UTC),
        cache,
        None if baseline_quantity is None else canonical_decimal(baseline_quantity),
        outcome,
        reverses,
        attributes,
    )
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).digest()


TENANT_RE = re.compile(TENANT_PATTERN.replace("$", r"\Z"))  # "$" would let "acme\n" in
