"""The metrics repository's import footprint (the API's side of it)."""

from __future__ import annotations

import subprocess
import sys


class TestImports:
    def test_the_metrics_api_does_not_load_pandas(self):
        # pandas is the job's (MetricsStore); loading it in every API server costs ~50 MB
        # of RSS and half a second of start-up for nothing.
        code = (
            "import sys, service.metrics.endpoints, service.metrics.repository; "
            "sys.exit('pandas' in sys.modules)"
        )
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
