"""Subscription MRR, customer MRR per day and the movements ledger (design §3-§4)."""
