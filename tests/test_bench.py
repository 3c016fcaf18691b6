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
    assert set(report["events_per_s"]) == {"zscore", "hst", "metric_stream", "knn", "knn_rshash", "ape", "apre_mss"}
    assert report["river_hst_events_per_s"] > 0
    for name, rate in report["events_per_s"].items():
        assert rate > 0
        expected = rate / report["river_hst_events_per_s"]
        assert abs(report["ratio_to_river_hst"][name] - expected) <= 0.05 * expected + 0.01  # ratio of the same run


def test_the_suite_runs_end_to_end_in_its_small_mode(tmp_path):
    """`python -m bench --small`: every part runs against a real broker and reports ratios of the same run."""
    subprocess.run([sys.executable, "-m", "bench", "--small", "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                   text=True, check=True, timeout=600)
    result = json.loads((tmp_path / "suite-small.json").read_text())
    for flow in ("ceiling", "usual_stack", "vigil", "vigil_flat_json", "vigil_replay", "vigil_two_processes",
                 "vigil_two_processes_key_shards"):
        assert result[flow]["events_per_s"] > 0, flow
    vigil_format, flat = result["decoding"]
    assert flat["vs_vigil_format"] == round(flat["events_per_s"] / vigil_format["events_per_s"], 3) > 0
    for flow in ("vigil_two_processes", "vigil_two_processes_key_shards"):
        assert result[flow]["vs_one_process"] == round(result[flow]["events_per_s"] / result["vigil"]["events_per_s"], 2)
    assert result["ceiling"]["events"] == result["usual_stack"]["events"] == result["events"]
    assert result["latency"]["alerts"] > 0 and result["latency"]["p99_ms"] >= result["latency"]["p50_ms"] > 0
    assert [s["entities"] for s in result["state"]] == [1000] and result["state"][0]["snapshot_mib"] > 0
    assert {k["kernel"] for k in result["kernels"]} == {"robust_ewma", "calibrated_alerting", "trend_cusum", "adwin",
                                                        "page_hinkley", "apre_mss_scoring"}
    table = (tmp_path / "suite-small.md").read_text()
    usual = result["usual_stack"]["events_per_s"]
    assert f"| vigil | {result['vigil']['events_per_s']:,} | {result['vigil']['events_per_s'] / usual:.1f}x |" in table
    assert "No GPU was available" in table or result["machine"]["gpu"]


def test_the_fairness_benchmark_reports_every_row_against_the_usual_stack():
    result = subprocess.run([sys.executable, "bench/bench_fairness.py", "--applications", "5000", "--kernel-rows", "1500"],
                            cwd=REPO, capture_output=True, text=True, check=True, timeout=600)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 7 and rows[0].endswith("| 1.0x |")
    assert all(float(row.rsplit("|", 2)[-2].strip().rstrip("x")) > 0 for row in rows)
    assert "reservoir baseline" in result.stdout


def test_the_privacy_benchmark_small_pass_audits_and_flags_a_planted_bug(tmp_path):
    subprocess.run([sys.executable, "bench/bench_privacy.py", "--small", "--json", str(tmp_path / "p.json")], cwd=REPO,
                   capture_output=True, text=True, check=True, timeout=600)
    result = json.loads((tmp_path / "p.json").read_text())
    low, high = result["t4"]["correct"]["interval"]
    assert low <= 1.0 <= high  # a correct Laplace tree: the audited epsilon's interval contains 1
    assert result["t4"]["half_noise"]["interval"][0] > 1.0  # half the noise: flagged
    for row in result["t1"]:
        assert abs(row["mean_var"] / row["mean_var_exact"] - 1) < 0.25, row
    assert all(row["max_updates"] <= row["cap"] and row["within_bound"] >= 0.95 for row in result["t5"])
    assert all(row["algorithm"] == "counter" and row["within_bound"] >= 0.95 for row in result["t6"])


def test_the_drift_benchmark_compares_both_detectors_on_the_demo_stream():
    """On a short demo stream (1,200 ticks, 9 gradual drifts) the trend CUSUM's drift alarms are the more precise."""
    result = subprocess.run([sys.executable, "bench/bench_drift.py", "--seeds", "7", "--events", "60000"], cwd=REPO,
                            capture_output=True, text=True, check=True, timeout=300)
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in result.stdout.splitlines()
            if line.startswith("| 7 |")]
    assert [row[1] for row in rows] == ["trend_cusum on the four fields (default)", "adwin on score:outlier (before)"]
    (_, _, _, cusum_precision, cusum_found, *_), (_, _, _, adwin_precision, _, *_) = rows
    assert float(cusum_precision) >= 0.9 > float(adwin_precision) and cusum_found.endswith("/9")
