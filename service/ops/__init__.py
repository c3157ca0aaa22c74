"""Operations: health, readiness, Prometheus metrics, request timing and logs."""
