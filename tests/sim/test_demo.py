"""`churn-ledger demo` end to end at a small size: the API's numbers are the simulator's."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from rich.console import Console

from sim.demo import run_demo


def test_demo_numbers_equal_simulator_truth():
    out = io.StringIO()
    result = run_demo(customers=25, months=6, seed=3, console=Console(file=out, width=200))
    assert result.rejected == 0
    assert result.stored > 100
    assert result.duplicates > 0
    assert len(result.months) == 6
    assert result.usd_mrr_truth, "the simulated account has USD customers"
    assert any(result.usd_mrr_truth.values())
    assert result.usd_mrr_api == result.usd_mrr_truth
    # It ends with where the dashboard is and a key to sign in with.
    *_, url_line, key_line = out.getvalue().strip().splitlines()
    assert "http://localhost:8000/dashboard" in url_line
    assert re.fullmatch(r"API key: +[0-9a-f]{32}", key_line)


def test_demo_serve_keeps_the_server_up_with_the_dashboard():
    out = io.StringIO()
    stop = threading.Event()
    run = threading.Thread(
        target=run_demo,
        kwargs={"customers": 8, "months": 3, "seed": 4, "serve": True, "until": stop,
                "console": Console(file=out, width=200)},
    )  # fmt: skip
    run.start()
    try:
        deadline = time.monotonic() + 120
        while not re.search(r"API key: +([0-9a-f]{32})", out.getvalue()):
            assert run.is_alive() and time.monotonic() < deadline, out.getvalue()
            time.sleep(0.1)
        url = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/dashboard)", out.getvalue())
        key = re.search(r"API key: +([0-9a-f]{32})", out.getvalue())
        assert url and key
        time.sleep(0.5)
        assert run.is_alive(), "the server keeps running after the report"
        page = httpx.get(url.group(1))
        assert page.status_code == 200 and "churn-ledger" in page.text
        base = url.group(1).removesuffix("/dashboard")
        customers = httpx.get(
            base + "/v1/customers", headers={"Authorization": f"Bearer {key.group(1)}"}
        )
        assert customers.status_code == 200 and customers.json()["data"]
    finally:
        stop.set()
        run.join(timeout=30)
    assert not run.is_alive()


def test_without_the_simulator_demo_says_so_in_one_line_and_fails():
    # A production install (pip install ., the Docker image) has no `sim` package. None in
    # sys.modules makes `import sim` raise ModuleNotFoundError(name="sim"), as it does there,
    # whatever this checkout and its editable install provide.
    script = "import sys; sys.modules['sim'] = None; from service.cli import app; app()"
    done = subprocess.run(
        [sys.executable, "-c", script, "demo"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert "dev tool" in line
    assert "make demo" in line
