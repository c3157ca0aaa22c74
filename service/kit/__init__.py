"""The bottom layer: one home per shared concept (errors, auth, deps, params, money, time,
periods, pagination, csv, signing, sql, gate). Nothing here imports ledger, metrics,
payments or the Stripe readers."""
