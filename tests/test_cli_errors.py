"""What goes wrong around a run is said in one line, through the real CLI, never with a traceback."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from importlib.metadata import version

import pytest

from conftest import REPO, vigil, vigil_process

# Small back-off, so that a bounded run's attempts against a closed port end in seconds (each bootstrap takes 2 s).
FAST_RETRY = ("--set", "kafka.retry_initial_seconds=0.05", "--set", "kafka.retry_max_seconds=0.2")


def file_run(tmp_path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``vigil run`` of the default operators on a small file source (no Kafka anywhere)."""
    events = tmp_path / "events.jsonl"
    events.write_text("".join(f'{{"key":"k{i % 2}","ts":{1767225600000 + i * 1000},"fields":{{"cpu":{50 + i % 3}}}}}\n'
                              for i in range(100)))
    return vigil("run", "--config", "pipeline/default.toml", "--set", "source.type='file'", "--set",
                 f"source.path='{events}'", "--set", "operators.0.fields=['cpu']", *args, check=check)


def test_a_metrics_port_in_use_is_one_line_saying_how_to_change_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = file_run(tmp_path, "--run-dir", str(tmp_path / "run"), "--metrics-port", str(port), check=False)
    assert result.returncode == 1 and result.stderr.startswith(f"error: metrics port 127.0.0.1:{port} is in use")
    assert result.stderr.count("\n") == 1 and "--metrics-port" in result.stderr and "--no-metrics" in result.stderr


@pytest.mark.parametrize(("command", "reader"), [
    ("config params", "head -1"), ("config example", "head -1"),
    ("config params", "true"), ("config example", "true"), ("--help", "true"),  # a reader that never reads
])
def test_output_into_a_closed_pipe_ends_quietly(command, reader):
    result = subprocess.run(["bash", "-c", f'"{sys.executable}" -m pipeline.cli {command} | {reader}; '
                             'echo "status ${PIPESTATUS[0]}" >&2'], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stderr.splitlines()[-1] in ("status 0", "status 141"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # no traceback, no "Exception ignored"
    if reader == "head -1":
        assert result.stdout.startswith("[operators.params]" if command == "config params" else "# Vigil configuration")
        assert result.stdout.count("\n") == 1


def ends_in_one_line(result: subprocess.CompletedProcess, started: float) -> str:
    """The error line of a bounded run that gave up on its brokers, checked to end it well within a minute."""
    assert time.monotonic() - started < 60, "a bounded run should give up on a missing broker within seconds"
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.endswith(errors[0] + "\n"), result.stderr
    assert "in 6 attempts" in errors[0] and "gives up" in errors[0]
    return errors[0]


def test_a_bounded_replay_gives_up_on_an_unreachable_broker(tmp_path, port):
    started = time.monotonic()
    result = vigil("replay", "--from", "beginning", "--bootstrap-servers", f"127.0.0.1:{port}", "--topic", "t",
                   "--run-dir", str(tmp_path / "replay"), "--no-metrics", "--no-progress", *FAST_RETRY, check=False,
                   timeout=120)
    assert f"could not connect to Kafka at 127.0.0.1:{port}" in ends_in_one_line(result, started)


def test_a_bounded_run_gives_up_on_an_unreachable_broker(tmp_path, port):
    started = time.monotonic()
    result = vigil("run", "--config", "pipeline/default.toml", "--set", "source.type='kafka'", "--set", "source.topics=['t']",
                   "--set", "source.mode='bounded'", "--bootstrap-servers", f"127.0.0.1:{port}",
                   "--run-dir", str(tmp_path / "run"), "--no-metrics", *FAST_RETRY, check=False, timeout=120)
    assert f"could not connect to Kafka at 127.0.0.1:{port}" in ends_in_one_line(result, started)


def test_a_tailing_run_keeps_waiting_for_its_broker(tmp_path, port):
    log = tmp_path / "vigil.log"
    process = vigil_process("run", "--config", "pipeline/default.toml", "--set", "source.type='kafka'", "--set",
                            "source.topics=['t']", "--bootstrap-servers", f"127.0.0.1:{port}", "--run-dir",
                            str(tmp_path / "run"), "--no-metrics", *FAST_RETRY, log_path=log)
    try:
        deadline = time.monotonic() + 90
        while "(attempt 8:" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert process.poll() is None and "(attempt 8:" in log.read_text(), log.read_text()  # past a bounded run's 6
        process.terminate()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    assert "error:" not in log.read_text() and "Traceback" not in log.read_text()


def test_version():
    result = vigil("--version")
    assert result.stdout == f"vigil {version('vigil')}\n" and not result.stderr


def test_a_file_run_exports_no_broker_or_snapshot_metrics(tmp_path):
    file_run(tmp_path, "--run-dir", str(tmp_path / "plain"), "--no-metrics")
    plain = (tmp_path / "plain" / "metrics.prom").read_text()
    assert "vigil_events_total" in plain
    for absent in ("vigil_broker_up", "vigil_snapshot_seconds", "vigil_last_snapshot_timestamp_seconds"):
        assert absent not in plain, absent
    # with a recovery store the snapshots are kept, and described
    file_run(tmp_path, "--run-dir", str(tmp_path / "recovered"), "--set", f"recovery.directory='{tmp_path / 'state'}'",
             "--no-metrics")
    recovered = (tmp_path / "recovered" / "metrics.prom").read_text()
    assert "vigil_snapshot_seconds_count" in recovered and "vigil_last_snapshot_timestamp_seconds" in recovered
    assert "vigil_broker_up" not in recovered
