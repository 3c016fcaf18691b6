"""The benchmark script keeps working (tiny sizes; timings are for bench/, not for tests)."""
import json
import subprocess
import sys

from conftest import REPO


def test_outlier_benchmark_runs_every_operator_and_reports_ratios():
    result = subprocess.run(
        [sys.executable, "bench/bench_outlier.py", "--events", "1500", "--river-events", "300", "--entities", "5",
         "--batch", "256", "--warmup-events", "1300"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["events_per_s"]) == {"zscore", "hst", "ape", "apre_mss"}
    assert report["river_hst_events_per_s"] > 0
    for name, rate in report["events_per_s"].items():
        assert rate > 0
        expected = rate / report["river_hst_events_per_s"]
        assert abs(report["ratio_to_river_hst"][name] - expected) <= 0.05 * expected + 0.01  # ratio of the same run
