"""Event ids unique per tenant; money sums in the derived tables in NUMERIC.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23

Reviewed by hand. Issue 11's adversarial review found that a globally unique ``event_id``
lets one tenant learn whether another tenant's id exists (a resend of it conflicts, where an
unknown id is accepted) and block another tenant's import by posting its derived ids first.
Idempotency keys are scoped to their owner, as payment and ledger APIs do: the unique key
becomes ``(tenant_id, event_id)``, and "reversed at most once" follows it.

Sums of costs in the rollups and the alert series were ``bigint``: a few thousand events at
the per-event limit overflow 64 bits, which stopped the rollup job for every tenant. Each
event's cost stays ``bigint`` (it is bounded at ingest); every stored sum becomes NUMERIC.
Both tables are derived data, rewritten in place.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

STAGES = (
    "text_encoder",
    "caption_llm",
    "unet",
    "vae_decode",
    "postprocess",
    "storage",
    "cdn_egress",
)
SUMS = {
    "render_rollup": ("total_nanos", "baseline_nanos", *(f"{s}_nanos" for s in STAGES)),
    "daily_rollup": ("cost_nanos", "baseline_nanos"),
    "alert_hourly": ("delivered_nanos", *(f"{s}_nanos" for s in STAGES), "waste_nanos"),
}


def _retype(to: str) -> None:
    for table, columns in SUMS.items():
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {to}" for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    op.execute("ALTER TABLE cost_events DROP CONSTRAINT cost_events_event_id_key")
    op.execute("CREATE UNIQUE INDEX cost_events_tenant_event ON cost_events (tenant_id, event_id)")
    op.execute("DROP INDEX cost_events_reverses_once")
    op.execute(
        "CREATE UNIQUE INDEX cost_events_reverses_once ON cost_events (tenant_id, reverses) "
        "WHERE reverses IS NOT NULL"
    )
    _retype("numeric")


def downgrade() -> None:
    _retype("bigint")
    op.execute("DROP INDEX cost_events_reverses_once")
    op.execute(
        "CREATE UNIQUE INDEX cost_events_reverses_once ON cost_events (reverses) "
        "WHERE reverses IS NOT NULL"
    )
    op.execute("DROP INDEX cost_events_tenant_event")
    op.execute("ALTER TABLE cost_events ADD CONSTRAINT cost_events_event_id_key UNIQUE (event_id)")
