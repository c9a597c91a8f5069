"""Where a pruned render's events are in the archive (issue 16).

Revision ID: 0020
Revises: 0018
Create Date: 2026-11-24

Reviewed by hand. ``archive prune`` drops a partition's rows from PostgreSQL, and with them
the render index a render trace (``GET /v1/renders/{id}``) found them by. Before the drop it
now records, for each render with events in the partition, their seqs (``pruned_renders``:
one row per render and pruned range, the seqs in order), so a trace reads from the archive
only the files whose seq statistics hold them, and a render with no row here does not touch
the archive at all. ``event_keys`` could not serve: it has no render id, and giving it one
would add a random-key b-tree insert to every append for a read that only concerns pruned
renders. Recording at prune time costs the append nothing; prune already reads the
partition's keys for the wall times it keeps.

``pruned_renders_recorded`` names each pruned range (``log_pruned.first_seq``) whose renders
are recorded. Ranges pruned before this revision are not: their rows are gone, and only the
archive, which a migration does not read, still holds their render ids. A trace reads those
ranges in full (render id filtered) until the next ``archive prune`` records them from the
archive. Both tables are append-only, written by prune (the owner role) and read by the
application role.

Downgrade drops both; upgrading again leaves every pruned range unrecorded, which the next
prune records again from the archive.
"""

from alembic import op

revision = "0020"
down_revision = "0018"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"
TABLES = ("pruned_renders", "pruned_renders_recorded")


def _grant(statement: str) -> None:
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                {statement};
            END IF;
        END $$
        """
    )


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pruned_renders (
            render_id uuid NOT NULL,
            first_seq bigint NOT NULL,  -- the pruned range's, as in log_pruned
            seqs bigint[] NOT NULL,
            PRIMARY KEY (render_id, first_seq)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE pruned_renders_recorded (
            first_seq bigint PRIMARY KEY  -- log_pruned's
        )
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION renderledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION renderledger_refuse_change()"
        )
    _grant(f"GRANT SELECT ON {', '.join(TABLES)} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP TABLE {', '.join(TABLES)}")  # their triggers and grants with them
