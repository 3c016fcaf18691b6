"""`vigil score` and `vigil evaluate nab` through the real CLI."""
import csv
import json
from pathlib import Path

from conftest import vigil

NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"


def write_series(path: Path, values: list[str], stamps: list[str] | None = None) -> None:
    stamps = stamps or [f"2024-01-01 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}" for i in range(len(values))]
    path.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, values)))


def read_scores(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_scores_every_row_causally_and_reports_bad_rows(tmp_path):
    values = [str(10 + (i % 5)) for i in range(1500)]
    values[700] = "n/a"
    values[1200] = "60"  # a spike
    stamps = [f"2024-01-01 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}" for i in range(1500)]
    stamps[800] = stamps[799]  # a repeated timestamp
    write_series(tmp_path / "in.csv", values, stamps)
    result = vigil("score", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"))
    assert "line 702: value 'n/a' is not a number" in result.stderr and "repeat the timestamp" in result.stderr
    rows = read_scores(tmp_path / "out.csv")
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"] and len(rows) == 1500
    scores = [float(r["anomaly_score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[700] == 0.0
    assert scores[1200] == max(scores) > 0.99  # the spike
    changed = values[:1300] + ["1000"] * 200  # later rows changed: earlier scores stay
    write_series(tmp_path / "changed.csv", changed, stamps)
    vigil("score", "--input", str(tmp_path / "changed.csv"), "--output", str(tmp_path / "changed-out.csv"))
    again = read_scores(tmp_path / "changed-out.csv")
    assert [r["anomaly_score"] for r in again][:1300] == [r["anomaly_score"] for r in rows][:1300]


def test_clear_errors_for_a_missing_column_or_a_bad_timestamp(tmp_path):
    write_series(tmp_path / "in.csv", ["1", "2"], ["2024-01-01 00:00:00", "yesterday"])
    missing = vigil("score", "--input", str(tmp_path / "in.csv"), "--value-column", "cpu", "--output", "x.csv", check=False)
    assert missing.returncode == 2 and "no column 'cpu'" in missing.stderr
    bad = vigil("score", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.csv"), check=False)
    assert bad.returncode == 2 and "line 3: timestamp 'yesterday' is not a date and time" in bad.stderr


def test_evaluate_nab_on_the_development_split():
    result = vigil("evaluate", "nab", "--data-dir", str(NAB / "data"), "--windows", str(NAB / "labels" / "combined_windows.json"),
                   "--json")
    report = json.loads(result.stdout)
    assert len(report["files"]) == 35 and set(report["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert 0 < report["profiles"]["standard"]["score"] < 100
    assert sum(f["windows"] for f in report["files"]) == 55
