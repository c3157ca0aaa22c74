"""State of the Stripe API import jobs: resumable backfill cursors and reconcile runs."""
