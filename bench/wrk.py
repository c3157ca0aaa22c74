"""Load from wrk (C, one thread), the client of issue 13's own figures: events pre-signed.

The bench's Python client spends ~60-100 µs of CPU a request, half a core at the rates
measured, on the 2 cores it shares with the server it measures; wrk spends a fraction
of that. Each request is `bench.load`'s n-th event, byte for byte: Lua fills the same
template (`bench.load._template`), and the signatures are computed here beforehand
(Lua has no HMAC), one per event the run may send.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.load import _template, fields

# Events signed per second of load: above any rate this machine reaches (~9,000/s bare).
SIGNED_PER_SECOND = 20_000

_LUA = """
local i = -1
request = function()
  i = i + 1
  local sig = sigs[i + 1]
  if sig == nil then error("out of pre-signed events") end
  -- bench.load.fields(i)
  local body = string.format(template, i, 1735689600 + i, i % 5000, i % 5000, i, 1 + i % 7)
  return wrk.format("POST", "/webhooks/stripe", {
    ["Content-Type"] = "application/json",
    ["Stripe-Signature"] = "t=" .. timestamp .. ",v1=" .. sig,
  }, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _script(secret: str, seconds: float, prefix: str) -> str:
    template = _template(prefix)
    timestamp = int(time.time())
    key = secret.encode()
    signatures = [
        hmac.new(key, f"{timestamp}.".encode() + template % fields(n), hashlib.sha256).hexdigest()
        for n in range(int(seconds * SIGNED_PER_SECOND))
    ]
    # A long bracket: the template's JSON has quotes and backslashes, never "]==]".
    return (
        f"template = [==[{template.decode()}]==]\n"
        f"timestamp = {timestamp}\n"
        f"sigs = {{{','.join(f'{s!r}' for s in signatures)}}}\n" + _LUA
    )


def run(url: str, secret: str, concurrency: int, seconds: float, prefix: str = "") -> dict:
    """`bench.load.run`'s figures, from wrk. Requests still in flight when wrk stops
    are not counted (their events may be stored): `ok` counts the answers wrk read."""
    with tempfile.TemporaryDirectory(prefix="churn-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(_script(secret, seconds, prefix))
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script), url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    requests = result["requests"]
    failed = result["non_2xx"] + result["socket_errors"]
    return {
        "requests": requests,
        "ok": requests - failed,
        "statuses": {"2xx": requests - result["non_2xx"], "other": result["non_2xx"]},
        "rps": round(requests / (result["duration_us"] / 1e6), 1),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
    }
