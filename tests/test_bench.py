"""The benchmarks keep running (their figures are read by people, never asserted here)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_engine_benchmark_runs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "engine.py"), "--events", "300",
                             "--repeat", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines()[1:4]]
    assert rows == ["10", "1,000", "10,000"]
    assert "10,000 rules cost" in result.stdout
