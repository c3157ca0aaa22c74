"""Projection: from the event store to the ledger and payment tables (design §1)."""
