"""Stripe webhook receiver and the durable event store (design §1, §2)."""
