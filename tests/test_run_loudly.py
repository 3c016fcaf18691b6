"""`vigil run` says how a run went: a summary of its counts, one WARNING when most events are dead-lettered or an
operator's field is in no event, and exit 1 when nothing could be decoded. The real CLI on real files."""
import json
import re
from collections import Counter

import pytest

from conftest import REPO, vigil

TS = 1_767_225_600_000


def write_config(tmp_path, events, fields=("cpu",)) -> str:
    config = tmp_path / "vigil.toml"
    config.write_text(f"""
[source]
type = "file"
path = {json.dumps(str(events))}

[[operators]]
name = "outlier"
type = "zscore"
fields = {json.dumps(list(fields))}
[operators.params]
warmup = 20
[operators.params.alerting]
warmup = 20

[metrics]
enabled = false
""")
    return str(config)


def event(i: int, cpu: float) -> str:
    return json.dumps({"key": f"web-{i % 3}", "ts": TS + i * 1000, "fields": {"cpu": cpu, "mem": 1.0}})


def run(tmp_path, events, *args, fields=("cpu",)):
    return vigil("run", "--config", write_config(tmp_path, events, fields), "--run-dir", str(tmp_path / "out"), *args,
                 check=False)


def log_lines(result, level: str) -> list[str]:
    return [line.split(f" {level} vigil: ", 1)[1] for line in result.stderr.splitlines() if f" {level} vigil: " in line]


def test_a_run_that_decodes_no_event_exits_1_with_the_reason_an_example_and_the_summary(tmp_path):
    events = tmp_path / "flat.jsonl"  # flat JSON, but the default wire format wants key, ts and fields
    events.write_text("".join(json.dumps({"host": "web-1", "ts": "2026-12-01T10:00:00Z", "cpu": 0.42}) + "\n"
                              for _ in range(1200)))
    result = run(tmp_path, events, "--no-progress")
    assert result.returncode == 1
    assert log_lines(result, "WARNING") == [
        "1000 of the first 1000 events were dead-lettered; top reason missing_key (1000): Object missing required "
        'field `key` — e.g. {"host": "web-1", "ts": "2026-12-01T10:00:00Z", "cpu": 0.42}; check [source.schema] '
        "(vigil config check CONFIG --sample FILE)"]
    assert log_lines(result, "ERROR") == [
        "no event could be decoded: 1200 were dead-lettered, top reason missing_key (1200); the dead letters are in "
        f"{tmp_path / 'out' / 'dead_letters.jsonl'}"]
    assert "Vigil run summary" in result.stdout and "(dead-lettered by reason: missing_key 1200)" in result.stdout
    assert re.search(r"events +1200 ", result.stdout) and re.search(r"valid +0\n", result.stdout)
    assert "records" not in result.stderr  # --no-progress


@pytest.mark.parametrize("count", [300, 10_500])  # at the end of a short input; after the first 10,000 events
def test_a_misspelt_field_is_named_with_the_fields_the_events_have(tmp_path, count):
    events = tmp_path / "events.jsonl"
    events.write_text("".join(event(i, 0.4 + i % 5 / 10) + "\n" for i in range(count)))
    result = run(tmp_path, events, "--no-progress", fields=["cpuu", "mem"])
    assert result.returncode == 0
    assert log_lines(result, "WARNING") == [
        f"field 'cpuu', which the operators read, is in none of the first {min(count, 10_000)} valid events; recent "
        "events have cpu, mem — did you mean 'cpu'?"]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """600 events with spikes, four bad lines and a blank one, run with the progress drawn (stderr is a pipe)."""
    tmp_path = tmp_path_factory.mktemp("good")
    rows = [event(i, 50.0 + i % 3 + (40 if i % 97 == 96 else 0)) for i in range(600)]
    rows[100:104] = ["{broken", '{"ts": 1, "fields": {}}', '{"key": "web-1", "ts": "soon", "fields": {}}', "[1]"]
    rows.insert(300, "")
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(rows) + "\n")
    return tmp_path, run(tmp_path, events)


def test_a_good_run_prints_a_summary_whose_counts_match_the_input_and_the_alerts(good_run):
    tmp_path, result = good_run
    assert result.returncode == 0 and not log_lines(result, "WARNING") and not log_lines(result, "ERROR")
    out = result.stdout
    assert re.search(r"events +600 ", out) and re.search(r"valid +596\n", out) and re.search(r"invalid +4 ", out)
    alerts = Counter((a["operator"], a["severity"]) for a in map(json.loads, (tmp_path / "out" / "alerts.jsonl").open()))
    assert alerts
    header, *rows = out[out.index("  alerts "):].splitlines()
    severities = header.split()[1:-1]
    shown = {(row.split()[0], severity): int(n) for row in rows for severity, n in zip(severities, row.split()[1:-1])}
    assert {key: n for key, n in shown.items() if n} == dict(alerts)
    assert "[##############################] 100.0% 601/601 records" in result.stderr  # the blank line counts


def test_the_summary_counts_dead_letters_by_reason_as_the_dead_letter_file_has_them(good_run):
    tmp_path, result = good_run
    dead = Counter(d["reason"] for d in map(json.loads, (tmp_path / "out" / "dead_letters.jsonl").open()))
    shown = re.search(r"dead-lettered by reason: ([^)]*)\)", result.stdout).group(1)
    assert dict((reason, int(n)) for reason, n in (item.split() for item in shown.split(", "))) == dict(dead)
    assert set(dead) == {"bad_json", "missing_key", "bad_timestamp", "not_an_object"}


def test_the_summary_keeps_out_of_a_stdout_sink(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("".join(event(i, 50.0 + (40 if i % 97 == 96 else 0)) + "\n" for i in range(300)))
    result = run(tmp_path, events, "--no-progress", "--set", "sinks.alerts.type='stdout'")
    assert result.returncode == 0 and "Vigil run summary" in result.stderr
    assert [json.loads(line)["operator"] for line in result.stdout.splitlines()]


def test_relative_paths_are_taken_from_the_config_file_and_a_missing_one_says_where_vigil_looked(tmp_path):
    (tmp_path / "events.jsonl").write_text(event(0, 1.0) + "\n")  # beside the config, not in the current directory
    found = vigil("run", "--config", write_config(tmp_path, "events.jsonl"), "--run-dir", str(tmp_path / "out"),
                  "--no-metrics", check=False)
    assert found.returncode == 0, found.stderr
    missing = vigil("run", "--config", write_config(tmp_path, "gone.jsonl"), "--no-metrics", check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"error: source file(s) not found: {tmp_path / 'gone.jsonl'}; a relative "
                                      "source.path in a config file is relative to that file")
    typed = vigil("run", "--config", write_config(tmp_path, "x"), "--set", "source.path='gone.jsonl'", "--no-metrics",
                  check=False)
    assert f"gone.jsonl (looked for {REPO / 'gone.jsonl'}, relative to the current directory)" in typed.stderr
