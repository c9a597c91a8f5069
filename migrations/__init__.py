"""Alembic environment and hand-reviewed revisions; ``renderledger migrate`` runs them."""
