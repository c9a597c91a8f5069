"""The renderer's settings groups: caption providers, storage and how it reaches the ledger."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from ledger.pools import POOL_PATTERN


class CaptionProvider(BaseModel):
    """One OpenAI-compatible chat-completions endpoint, tried in list order."""

    name: str
    base_url: str
    model: str
    sku_prefix: str  # e.g. "llm.gpt-4o-mini": events go to <prefix>.input_token / .output_token
    api_key: str | None = None
    timeout_s: float = 10.0


class CaptionSettings(BaseModel):
    # JSON in RENDERLEDGER_CAPTION__PROVIDERS; empty means the built-in offline rewriter.
    providers: list[CaptionProvider] = []
    retries: int = 2


class RenderSettings(BaseModel):
    bucket: str | None = None  # S3 bucket for images; without one, --out DIR
    ledger_url: str | None = None  # emit over HTTP to this API instead of in-process
    ledger_api_key: str | None = None  # an ingest key for that API
    # The caches' own PostgreSQL (migrated with `renderledger migrate`). Over HTTP the renderer
    # never opens the ledger's database; without this it then runs with no caches.
    cache_url: str | None = None
    storage_months: Decimal = Decimal(1)  # how long an image is kept, for GB-month metering
    gpu_sku: str | None = None  # when the GPU's name maps to no known SKU
    # The GPU pool this renderer holds (declared with `renderledger pools load`). When set,
    # every event names it and a heartbeat records the capacity held every heartbeat_s,
    # busy or idle; over HTTP that takes an admin key (capacity_api_key, else ledger_api_key).
    pool: str | None = Field(default=None, pattern=POOL_PATTERN)
    pool_gpus: Decimal = Field(default=Decimal(1), gt=0, le=100_000)
    heartbeat_s: float = Field(default=60.0, ge=0.01, le=3600)
    capacity_api_key: str | None = None
