"""Directories and disks: an unwritable run or recovery directory, or a full disk under an output, gives one clear
error naming the path and a non-zero exit, and the recovery store survives for a restart that loses nothing."""
import json
from pathlib import Path

from conftest import vigil

START_MS = 1_767_225_600_000
CONFIG = """
[source]
type = "file"
path = "{events}"

[run]
run_dir = "{run_dir}"

[recovery]
directory = "{recovery}"
snapshot_interval_seconds = 0.05

[sinks.alerts]
type = "file"
path = "{alerts}"

[[operators]]
name = "z"
type = "zscore"
fields = ["cpu"]
[operators.params]
warmup = 5
alerting = {{ warmup = 20 }}
"""


def setup(tmp_path: Path, *, run_dir: Path | None = None, recovery: Path | None = None, alerts: str = "alerts.jsonl"):
    events = tmp_path / "events.jsonl"
    lines = [{"key": f"host-{i % 3}", "ts": START_MS + i * 1000, "fields": {"cpu": 50.0 + (40.0 if i % 97 == 0 else i % 5)}}
             for i in range(600)]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = tmp_path / "vigil.toml"
    config.write_text(CONFIG.format(events=events, run_dir=run_dir or tmp_path / "run",
                                    recovery=recovery or tmp_path / "state", alerts=alerts))
    return config


def alert_lines(path: Path) -> list[int]:
    return [json.loads(line)["source"]["line"] for line in path.read_text().splitlines()]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_an_unwritable_run_directory_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")  # even root cannot create a directory below a file
    result = vigil("run", "--config", str(setup(tmp_path, run_dir=blocker / "run")), check=False)
    assert result.returncode == 1
    assert error_lines(result) == [f"error: the run directory (run.run_dir) {blocker / 'run'} is not writable: Not a directory"]


def test_an_unwritable_recovery_directory_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = vigil("run", "--config", str(setup(tmp_path, recovery=blocker / "state")), check=False)
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: the recovery directory (recovery.directory) {blocker / 'state'} is not writable: Not a directory"]


def test_a_full_disk_stops_the_run_with_the_path_and_a_restart_loses_nothing(tmp_path):
    full = vigil("run", "--config", str(setup(tmp_path, alerts="/dev/full")), check=False)  # every write: ENOSPC
    assert full.returncode == 1
    assert error_lines(full)[-1].startswith("error: cannot write /dev/full: No space left on device (errno 28)")
    assert "Traceback" not in full.stderr
    # The recovery store is intact: a restart with room to write resumes and every alert reaches the file.
    again = vigil("run", "--config", str(setup(tmp_path)))
    assert again.returncode == 0
    (tmp_path / "fresh").mkdir()
    vigil("run", "--config", str(setup(tmp_path / "fresh")))
    resumed, expected = (alert_lines(tmp_path / "run" / "alerts.jsonl"),
                         alert_lines(tmp_path / "fresh" / "run" / "alerts.jsonl"))
    assert expected and sorted(set(resumed)) == sorted(expected)
