"""Metric jobs: the pandas refresh of the precomputed tables behind /v1/metrics."""
