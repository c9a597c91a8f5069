"""The core of renderledger: event and money types, rating, the append-only store."""
