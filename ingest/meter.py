"""Metering any pipeline: a block per stage becomes a cost event, sent like the renderer's.

The light client (``pip install renderledger``): what a platform adds to its own pipeline
to feed the ledger. Each ``stage`` block's wall time is the quantity of a per-second SKU
(or the quantity given); when the render's block ends, its events and an outcome event
(``delivered``, or ``failed`` if the block raised) are spooled to local disk, then sent, as
``ingest.client`` does for the bundled renderer: never lost, never doubled.

    meter = Meter("http://127.0.0.1:8000", api_key=KEY, tenant="acme", use_case="social")
    with meter.render() as render:
        with render.stage("unet", "gpu.h100.second"):
            image = pipe(prompt)
    meter.close()
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from ingest.client import Emitter, HttpTransport, Spool
from ledger.events import CostEvent, Outcome, Stage


@dataclass
class Render:
    """One render's stages, collected until its block ends."""

    tenant: str
    use_case: str
    render_id: UUID
    attributes: dict[str, Any]
    events: list[CostEvent] = field(default_factory=list)

    def add(
        self,
        stage: str,
        sku: str,
        quantity: Decimal,
        *,
        wall_s: float | None = None,
        outcome: Outcome | None = None,
        **extra: Any,
    ) -> None:
        attributes = self.attributes | extra
        if wall_s is not None:
            attributes["wall_s"] = round(wall_s, 9)
        self.events.append(
            CostEvent(
                event_id=uuid4(),
                tenant_id=self.tenant,
                use_case=self.use_case,
                render_id=self.render_id,
                stage=Stage(stage),
                sku=sku,
                quantity=quantity,
                occurred_at=datetime.now(UTC),
                outcome=outcome,
                attributes=attributes,
            )
        )

    @contextmanager
    def stage(
        self, stage: str, sku: str, quantity: Decimal | None = None, **attributes: Any
    ) -> Iterator[None]:
        """Meter the block: its wall seconds are the quantity unless one is given (e.g.
        tokens of a caption model, bytes of egress)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            used = Decimal(f"{seconds:.6f}") if quantity is None else quantity
            self.add(stage, sku, used, wall_s=seconds, **attributes)


class Meter:
    """A tenant's use case, sending over HTTP with a local spool (``spool_dir``)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str,
        tenant: str,
        use_case: str,
        spool_dir: Path | str = ".renderledger-spool",
        **attributes: Any,
    ) -> None:
        self.tenant, self.use_case, self.attributes = tenant, use_case, attributes
        self.transport = HttpTransport(url, api_key=api_key)
        self.emitter = Emitter(self.transport, Spool(Path(spool_dir)))

    @contextmanager
    def render(self, render_id: UUID | None = None) -> Iterator[Render]:
        """The render's events are durable on disk when the block ends, and sent."""
        render = Render(self.tenant, self.use_case, render_id or uuid4(), dict(self.attributes))
        outcome = Outcome.FAILED
        try:
            yield render
            outcome = Outcome.DELIVERED
        finally:
            render.add(Stage.RENDER, "render.image", Decimal(1), outcome=outcome)
            self.emitter.emit(render.events)

    def close(self, timeout_s: float = 5.0) -> int:
        """Stop retrying after one last flush; returns the batches still spooled."""
        return self.emitter.close(timeout_s)
