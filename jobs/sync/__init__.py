"""Import jobs: the Stripe API client, backfill, history reconstruction and reconcile."""
