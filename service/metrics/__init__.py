"""Period metrics (design §5): definitions, /v1/metrics/*, reads of the jobs' tables."""
