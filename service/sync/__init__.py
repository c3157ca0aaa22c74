"""The service's side of the Stripe API import jobs: backfill cursors and reconcile runs,
POST /v1/admin/reconcile and the reconcile drift gauge (the jobs are in jobs/sync)."""
