"""The read path: Polars rollups, per-tenant reports, invoices and anomaly alerts."""
