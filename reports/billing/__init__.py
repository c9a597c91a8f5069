"""Billing: what a tenant is charged, from plans applied to the priced events of a month."""
