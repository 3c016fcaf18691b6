"""`vigil evaluate fairness` through the real CLI on a small table with a built-in disparity."""
import csv
import json

import numpy as np

from conftest import vigil


def write_table(path, rows: int = 600, seed: int = 0) -> None:
    """Applicants: a numeric score, a categorical region, a protected group, and a label that depends on the score
    and, unfairly, on the group."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["score", "region", "group", "approved"])
        for _ in range(rows):
            group = rng.integers(2)
            score = rng.normal(0.6 * group, 1.0)
            approved = score + 0.8 * group + rng.normal(0, 0.5) > 0.7
            out.writerow([f"{score:.3f}", f"r{rng.integers(4)}", ("a", "b")[group], ("no", "yes")[int(approved)]])


def test_the_cli_reports_every_method_and_lambda_and_writes_the_plot(tmp_path):
    data, plot = tmp_path / "applicants.csv", tmp_path / "trade-off.png"
    write_table(data)
    result = vigil("evaluate", "fairness", "--data", str(data), "--protected", "group", "--label", "approved",
                   "--lambda", "0,10", "--seeds", "2", "--json", "--plot", str(plot))
    report = json.loads(result.stdout)
    assert report["rows"] == 600 and report["seeds"] == 2
    found = {(row["method"], row["lambda"]) for row in report["results"]}
    assert found == {("aranyani", 0.0), ("aranyani", 10.0), ("reservoir", 0.0), ("reservoir", 10.0), ("logistic", 0.0),
                     ("mlp", 0.0), ("hoeffding_adaptive_tree", 0.0), ("majority", 0.0)}
    for row in report["results"]:
        assert 0.5 < row["accuracy"] <= 1 and 0 <= row["demographic_parity"] <= 1 and len(row["per_seed"]) == 2
        assert row["accuracy"] == np.mean([run["accuracy"] for run in row["per_seed"]])
    for method in ("aranyani", "reservoir"):
        by_lambda = {row["lambda"]: row for row in report["results"] if row["method"] == method}
        assert by_lambda[10.0]["demographic_parity"] < by_lambda[0.0]["demographic_parity"], method
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_the_table_names_each_method_and_bad_arguments_are_refused(tmp_path):
    data = tmp_path / "applicants.csv"
    write_table(data, rows=200)
    table = vigil("evaluate", "fairness", "--data", str(data), "--protected", "group", "--label", "approved",
                  "--methods", "aranyani,logistic", "--lambda", "0,5", "--seeds", "1").stdout
    assert "aranyani" in table and "logistic" in table and "mlp" not in table
    bad = vigil("evaluate", "fairness", "--data", str(data), "--protected", "group", "--label", "approved",
                "--methods", "aranyani,svm", check=False)
    assert bad.returncode == 2 and "unknown svm" in bad.stderr
    missing = vigil("evaluate", "fairness", "--data", str(data), "--protected", "sex", "--label", "approved", check=False)
    assert missing.returncode == 2 and "no column 'sex'" in missing.stderr
