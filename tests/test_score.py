"""`vigil score` and `vigil evaluate nab` through the real CLI."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

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


def spiky_values(count: int) -> list[str]:
    values = [str(10 + (i % 5)) for i in range(count)]
    values[count - 100] = "60"
    return values


def test_epoch_timestamps_in_any_unit_score_as_their_dates_do(tmp_path):
    values = spiky_values(1200)
    start = 1_700_000_000  # 2023-11-14T22:13:20Z
    write_series(tmp_path / "dates.csv", values, [str(np.datetime64(start + 60 * i, "s")) + "Z" for i in range(1200)])
    vigil("score", "--input", str(tmp_path / "dates.csv"), "--output", str(tmp_path / "dates-out.csv"))
    expected = [r["anomaly_score"] for r in read_scores(tmp_path / "dates-out.csv")]
    assert max(map(float, expected)) > 0.99
    for unit, scale in (("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)):
        write_series(tmp_path / f"{unit}.csv", values, [str((start + 60 * i) * scale) for i in range(1200)])
        result = vigil("score", "--input", str(tmp_path / f"{unit}.csv"), "--timestamp-unit", unit,
                       "--output", str(tmp_path / f"{unit}-out.csv"))
        assert "warning" not in result.stderr, result.stderr
        assert [r["anomaly_score"] for r in read_scores(tmp_path / f"{unit}-out.csv")] == expected, unit


def test_numbers_without_a_unit_are_refused_with_the_unit_that_fits(tmp_path):
    for stamps, unit in ((["1700000000", "1700000060"], "s"), (["1700000000000", "1700000060000"], "ms")):
        write_series(tmp_path / "in.csv", ["1", "2"], stamps)
        result = vigil("score", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.csv"), check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
        assert "column 'timestamp' holds numbers" in result.stderr and f"--timestamp-unit {unit} " in result.stderr
        assert "2023-11-14T22:13:20" in result.stderr
    # a unit that puts the times in 1970 is taken, with a warning naming the unit that fits
    write_series(tmp_path / "in.csv", ["1", "2"], ["1700000000", "1700000060"])
    result = vigil("score", "--input", str(tmp_path / "in.csv"), "--timestamp-unit", "ms", "--output", str(tmp_path / "o.csv"))
    assert "outside 2000..2100; --timestamp-unit s would put it there" in result.stderr


def test_the_key_is_written_and_repeats_are_judged_per_key(tmp_path):
    stamps = [f"2024-01-01 00:{i // 60:02d}:{i % 60:02d}" for i in range(600)]
    rows = [(t, key, str(10 + i % 3)) for i, t in enumerate(stamps) for key in ("web-1", "web-2")]  # same times, two keys
    rows += [(t, "db", "5") for t in stamps[:300]]  # a third key starting over in time: not going back
    rows.append((stamps[299], "db", "5"))  # a repeat within one key
    (tmp_path / "in.csv").write_text("time,host,cpu\n" + "".join(f"{t},{k},{v}\n" for t, k, v in rows))
    result = vigil("score", "--input", str(tmp_path / "in.csv"), "--timestamp-column", "time", "--value-column", "cpu",
                   "--key", "host", "--output", str(tmp_path / "out.csv"))
    problems = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert len(problems) == 1 and f"1 rows repeat the timestamp of the previous row of the same key, first at line " \
        f"{len(rows) + 1}" in problems[0], result.stderr
    out = read_scores(tmp_path / "out.csv")
    assert list(out[0]) == ["timestamp", "key", "value", "anomaly_score"] and len(out) == len(rows)
    assert [(r["timestamp"], r["key"]) for r in out] == [(t, k) for t, k, _ in rows]
    unkeyed = vigil("score", "--input", str(tmp_path / "in.csv"), "--timestamp-column", "time", "--value-column", "cpu",
                    "--output", str(tmp_path / "unkeyed.csv"))
    assert "repeat the timestamp of the row before" in unkeyed.stderr and "go back in time" in unkeyed.stderr
    assert list(read_scores(tmp_path / "unkeyed.csv")[0]) == ["timestamp", "value", "anomaly_score"]


@pytest.mark.parametrize(("content", "args", "message"), [
    ("time,v\n2024-01-01,1\n", (), "no column 'timestamp', 'value' (columns: time, v)"),
    ("timestamp,value\n2024-01-01,1\n", ("--key", "host"), "no column 'host' (columns: timestamp, value)"),
    ("", (), "empty file (no header row)"),
    ("timestamp,value\n", (), "no rows"),
    ("timestamp,value\n2024-01-01,high\n2024-01-02,low\n", (), "column 'value' holds no numbers (line 2: 'high')"),
    ("timestamp,value\n2024-01-01,1\n,2\n", (), "line 3: timestamp '' is not a date and time"),
    ("timestamp,value\n2024-01-01,1\n2024-13-01,2\n", (), "line 3: timestamp '2024-13-01' is not a date and time"),
    ("timestamp,value\n2024-01-01,1\n1700000000,2\n", (), "line 3: timestamp '1700000000' is not a date and time"),
    ("timestamp,value\n1700000000,1\nsoon,2\n", ("--timestamp-unit", "s"), "line 3: timestamp 'soon' is not an epoch time in s"),
    ("timestamp,value\n1e300,1\n", ("--timestamp-unit", "s"), "line 2: timestamp '1e300' is not an epoch time in s"),
    ("timestamp,value\n2024-01-01\n", (), "column 'value' holds no numbers"),  # a short row
    (b"timestamp,value\n2024-01-01,\xff\n", (), "not UTF-8 text"),
    (None, (), "cannot read: No such file or directory"),
    ("directory", (), "cannot read: Is a directory"),
], ids=["columns", "key", "empty", "no-rows", "no-numbers", "empty-time", "bad-date", "number-among-dates", "bad-epoch",
        "huge-epoch", "short-row", "binary", "missing-file", "directory"])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, content, args, message):
    path = tmp_path / "in.csv"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = vigil("score", "--input", str(path), *args, "--output", str(tmp_path / "out.csv"), check=False)
    assert result.returncode == 2 and result.stderr.startswith(f"error: {path}: ")
    assert message in result.stderr and result.stderr.count("\n") == 1 and not (tmp_path / "out.csv").exists()


def test_an_output_that_cannot_be_written_is_one_error_line(tmp_path):
    write_series(tmp_path / "in.csv", ["1", "2"])
    result = vigil("score", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path), check=False)
    assert result.returncode == 2 and result.stderr == f"error: {tmp_path}: cannot write: Is a directory\n"
