"""Anomaly alerts on unit cost: detection (pure), the alert log, webhooks, the harness."""
