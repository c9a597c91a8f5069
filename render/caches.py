"""Key-value caches in PostgreSQL for the renderer: written once per key, read many times."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine

from ledger.connections import connection


@dataclass(frozen=True)
class CachedCaption:
    rewritten: str
    sku_prefix: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class CachedEmbedding:
    tensors: bytes
    miss_seconds: Decimal


class CacheStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def caption(self, key: bytes) -> CachedCaption | None:
        with connection(self.engine) as raw:
            row = raw.execute(
                "SELECT rewritten, sku_prefix, input_tokens, output_tokens "
                "FROM caption_cache WHERE key = %s",
                (key,),
            ).fetchone()
        return CachedCaption(*row) if row else None

    def put_caption(self, key: bytes, prompt: str, entry: CachedCaption) -> None:
        with connection(self.engine, transaction=True) as raw:
            raw.execute(
                "INSERT INTO caption_cache "
                "(key, prompt, rewritten, sku_prefix, input_tokens, output_tokens) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
                (
                    key,
                    prompt,
                    entry.rewritten,
                    entry.sku_prefix,
                    entry.input_tokens,
                    entry.output_tokens,
                ),
            )

    def embedding(self, key: bytes) -> CachedEmbedding | None:
        with connection(self.engine) as raw:
            row = raw.execute(
                "SELECT tensors, miss_seconds FROM embedding_cache WHERE key = %s", (key,)
            ).fetchone()
        return CachedEmbedding(bytes(row[0]), row[1]) if row else None

    def put_embedding(self, key: bytes, model_id: str, entry: CachedEmbedding) -> None:
        with connection(self.engine, transaction=True) as raw:
            raw.execute(
                "INSERT INTO embedding_cache (key, model_id, tensors, miss_seconds) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
                (key, model_id, entry.tensors, entry.miss_seconds),
            )
