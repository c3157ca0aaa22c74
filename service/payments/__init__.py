"""Failed payments: episodes, recovery metrics, alerts (design §6)."""
