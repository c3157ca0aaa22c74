"""`churn-ledger demo` end to end at a small size: the API's numbers are the simulator's."""

from __future__ import annotations

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
