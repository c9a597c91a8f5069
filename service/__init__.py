"""The composition roots: the HTTP app, the CLI and the demo.

The only package that imports FastAPI or typer, and the only one that wires ledger, ingest,
render and reports together.
"""
