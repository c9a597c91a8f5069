"""The ``renderledger`` command line."""
