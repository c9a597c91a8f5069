"""The core's settings groups: where the database is and how large a batch may be.

The face (``service.settings``) composes these with the other packages' groups.
"""

from __future__ import annotations

from pydantic import BaseModel


class DatabaseSettings(BaseModel):
    url: str | None = None
    # The role the application runs as: it may INSERT and SELECT events, nothing more.
    app_role: str = "renderledger_app"
    pool_size: int = 8


class IngestSettings(BaseModel):
    max_batch_events: int = 10_000
    # 10,000 events of ~600 bytes with room for attributes.
    max_body_bytes: int = 32 * 1024 * 1024
    import_batch_size: int = 5_000
