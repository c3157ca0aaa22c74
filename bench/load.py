"""Load generator (own process): signed webhooks at fixed concurrency for a bounded time."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import statistics
import time
from typing import Any


def signed(body: bytes, secret: str) -> dict[str, str]:
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}


def event(n: int, prefix: str = "") -> bytes:
    """The n-th event of a run, its bytes as `_event` renders them, from a template: the
    JSON rendering took ~37 µs of the ~100 µs of client CPU a request cost, on a machine
    whose cores the client shares with the server it measures."""
    template = _TEMPLATES.get(prefix)
    if template is None:
        template = _TEMPLATES[prefix] = _template(prefix)
    return template % fields(n)


def fields(n: int) -> tuple[int, ...]:
    """The values `_template`'s fields take in the n-th event, in the text's order (the
    Lua of bench/wrk.py computes the same)."""
    return (n, 1735689600 + n, n % 5000, n % 5000, n, 1 + n % 7)


_TEMPLATES: dict[str, bytes] = {}
# Stand-ins for the values that vary, each occurring once in a rendered event; `event`
# passes the values in the order the fields come in the text (event id, created, ...).
_MARKS = (
    b'"sub_bench\u0001"', b'"cus_bench\u0002"', b'"si_bench\u0003"', b"9000000004",
    b"\u0005", b"9000000006",
)  # fmt: skip
_FORMATS = (b'"sub_bench%d"', b'"cus_bench%d"', b'"si_bench%d"', b"%d", b"%09d", b"%d")


def _template(prefix: str) -> bytes:
    rendered = _event(0, prefix, marks=True).replace(b"%", b"%%")
    for mark, fmt in zip(_MARKS, _FORMATS, strict=True):
        assert rendered.count(mark) == 1, mark
        rendered = rendered.replace(mark, fmt)
    return rendered


def _event(n: int, prefix: str = "", *, marks: bool = False) -> bytes:
    sub = {
        "id": "sub_bench\u0001" if marks else f"sub_bench{n % 5000}",
        "object": "subscription",
        "customer": "cus_bench\u0002" if marks else f"cus_bench{n % 5000}",
        "status": "active",
        "currency": "usd",
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_bench\u0003" if marks else f"si_bench{n}",
                    "object": "subscription_item",
                    "quantity": 9000000004 if marks else 1 + n % 7,
                    "price": {
                        "id": "price_bench",
                        "object": "price",
                        "unit_amount": 4900,
                        "currency": "usd",
                        "recurring": {"interval": "month", "interval_count": 1},
                    },
                }
            ],
        },
    }
    envelope = {
        "id": f"evt_bench_{prefix}\u0005" if marks else f"evt_bench_{prefix}{n:09d}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": 9000000006 if marks else 1735689600 + n,
        "livemode": False,
        "type": "customer.subscription.updated",
        "data": {"object": sub},
    }
    return json.dumps(envelope, indent=2).encode()


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    body: bytes,
    secret: str,
) -> int:
    headers = signed(body, secret)
    head = (
        f"POST /webhooks/stripe HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nStripe-Signature: {headers['Stripe-Signature']}"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    status_line = await reader.readuntil(b"\r\n")
    length = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def feed_paced(
    pending: asyncio.Queue[int | None], total: int, rate: float, senders: int
) -> float:
    """Puts 0 … total-1 on `pending` at `rate` a second, then one None per sender; returns
    when it started (perf_counter). Paced against the start, not the previous send: a slow
    answer does not lower the rate (open loop, as Stripe sends), up to `senders` in
    flight."""
    began = time.perf_counter()
    for n in range(total):
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.put_nowait(n)
    for _ in range(senders):
        pending.put_nowait(None)
    return began


async def run(
    url: str, secret: str, concurrency: int, seconds: float, prefix: str = ""
) -> dict[str, object]:
    """Keep-alive HTTP/1.1 over raw asyncio streams: a client cheap enough that the
    server, not the load generator, is what gets measured."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                body = event(next(counter), prefix)
                start = time.perf_counter()
                status = await _request(reader, writer, f"{host}:{port}", body, secret)
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "ok": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    # Several runs against one server need distinct event ids, or they are duplicates.
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    result = run(args.url, args.secret, args.concurrency, args.seconds, args.prefix)
    print(json.dumps(_event_loop_run(result)))


def _event_loop_run(coroutine: Any) -> Any:
    """On uvloop where installed (the service installs it): the client then took 0.029
    ms of CPU a request instead of 0.042 on asyncio's own loop (2026-12-04), CPU the
    server it measures shares with it."""
    try:
        import uvloop
    except ImportError:  # not on this platform (the service skips it on Windows)
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


if __name__ == "__main__":
    main()
