"""The Stripe-account simulator and `churn-ledger demo`: a dev tool, not part of the service.

Its own distribution (`churn-ledger-sim`, sim/pyproject.toml), installed by `make install`
next to churn-ledger; a production install (`pip install .`, the Docker image) has none of it.
"""
