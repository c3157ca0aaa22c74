"""`churn-ledger demo` end to end at a small size: the API's numbers are the simulator's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.console import Console

from sim.demo import run_demo


def test_demo_numbers_equal_simulator_truth():
    result = run_demo(customers=25, months=6, seed=3, console=Console(quiet=True))
    assert result.rejected == 0
    assert result.stored > 100
    assert result.duplicates > 0
    assert len(result.months) == 6
    assert result.usd_mrr_truth, "the simulated account has USD customers"
    assert any(result.usd_mrr_truth.values())
    assert result.usd_mrr_api == result.usd_mrr_truth


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
