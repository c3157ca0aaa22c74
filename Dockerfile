# churn-ledger: webhook receiver and metrics API.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
COPY jobs ./jobs
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 churn \
    && mkdir -p /app/data && chown churn /app/data

USER churn
EXPOSE 8000
# SQLite under /app/data by default; set DATABASE_URL for PostgreSQL.
VOLUME ["/app/data"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# One process is the whole service: receiver, projector (a child process) and the live
# refresh of the metric tables; no cron or second container is needed for fresh metrics.
CMD ["churn-ledger", "serve", "--migrate", "--host", "0.0.0.0", "--port", "8000"]
