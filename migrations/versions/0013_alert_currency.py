"""Alert series per currency: ``alert_hourly`` keyed by currency, ``alert_events.currency``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-23

Reviewed by hand. Since 0011 the rollups hold ``currency`` in their keys; the detector's
hourly series still summed a tenant × use case's renders in every currency. ``alert_hourly``
gains ``currency`` in its primary key. It is derived (rebuilt by detection from
``render_rollup``), so this revision empties it rather than guess a currency for old sums:
the next detection pass finds the table empty and rebuilds the whole baseline period (as on
a first run). ``alert_events`` gains a nullable ``currency``: the currency of the series an
alert opened on, whose money its detail and message give. Alerts logged before this
revision keep NULL (the log is append-only; nothing is rewritten), as do alerts that are
not of one series (a pool's utilisation). The downgrade empties ``alert_hourly`` again and
drops the column, and with it the currency of the alerts logged in between.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("TRUNCATE alert_hourly")
    op.drop_constraint("alert_hourly_pkey", "alert_hourly", type_="primary")
    op.add_column("alert_hourly", sa.Column("currency", sa.String(3), nullable=False))
    op.create_primary_key(
        "alert_hourly_pkey", "alert_hourly", ["hour", "tenant_id", "use_case", "currency"]
    )
    op.add_column("alert_events", sa.Column("currency", sa.String(3), nullable=True))


def downgrade() -> None:
    op.drop_column("alert_events", "currency")
    op.execute("TRUNCATE alert_hourly")
    op.drop_constraint("alert_hourly_pkey", "alert_hourly", type_="primary")
    op.drop_column("alert_hourly", "currency")
    op.create_primary_key("alert_hourly_pkey", "alert_hourly", ["hour", "tenant_id", "use_case"])
