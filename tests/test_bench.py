"""The benchmark script keeps working (tiny sizes; timings are for bench/, not for tests)."""
import json
import subprocess
import sys

from conftest import REPO


def test_outlier_benchmark_runs_and_reports_a_ratio():
    result = subprocess.run(
        [sys.executable, "bench/bench_outlier.py", "--events", "3000", "--river-events", "300", "--entities", "20", "--batch", "256"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["vigil_zscore_events_per_s"] > 0 and report["river_hst_events_per_s"] > 0
    expected = report["vigil_zscore_events_per_s"] / report["river_hst_events_per_s"]
    assert abs(report["ratio"] - expected) <= 0.05 * expected + 0.1  # ratio of the same run's figures
