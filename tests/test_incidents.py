"""Incidents (operators/incidents.py): grouping, resolution by event time, batch invariance and snapshots."""
import numpy as np
import pytest

from operators.event import Alert, SourcePosition, format_ts
from operators.incidents import IncidentTracker

MINUTE = 60_000
QUIET = 15 * MINUTE
RANKS = {"outlier": {"info": 1.0, "warning": 10.0, "critical": 100.0}, "drift": {"warning": 1.0}}


def alert(row, ts_ms, key="host-1", operator="outlier", severity="info", fields=("cpu",)):
    return Alert(f"{operator}-{row}", key, format_ts(ts_ms), operator, operator, float(row), severity, f"row {row}",
                 list(fields), SourcePosition(topic="m", partition=0, offset=row))


def stream(seed=0, rows=3000, keys=6):
    """Rows a minute apart over ``keys`` entities (interleaved, with jitter back in time), and alerts in bursts."""
    rng = np.random.default_rng(seed)
    ts = np.arange(rows) * (MINUTE // keys) + rng.integers(-MINUTE, MINUTE, rows)
    alerts = []
    bursts = np.where(np.arange(rows) // 500 % 2 == 0, 0.1, 0.005)  # 500 rows of bursts, 500 nearly quiet
    for row in np.flatnonzero(rng.random(rows) < bursts):
        alerts.append(alert(int(row), int(ts[row]), key=f"host-{row % keys}",
                            operator="outlier" if rng.random() < 0.8 else "drift",
                            severity=str(rng.choice(["info", "warning", "critical"])) if row % 2 else "warning",
                            fields=tuple(rng.choice(["cpu", "mem", "disk"], size=rng.integers(1, 3), replace=False))))
    return ts, alerts


def run(ts, alerts, cuts, tracker=None):
    """The tracker's records over the rows cut into batches at ``cuts``."""
    tracker = tracker or IncidentTracker(QUIET, RANKS)
    records = []
    for start, stop in zip([0, *cuts], [*cuts, len(ts)]):
        part = [a for a in alerts if start <= a.source.offset < stop]
        records += tracker.observe(ts[start:stop], part, lambda source, start=start: source.offset - start)
    return records, tracker


def test_an_incident_opens_updates_only_when_worse_and_resolves_after_the_quiet_period():
    ts = np.arange(100) * MINUTE
    alerts = [alert(10, ts[10]), alert(11, ts[11]), alert(12, ts[12], fields=("cpu", "mem")),
              alert(13, ts[13], severity="critical"), alert(14, ts[14], severity="info")]
    records, tracker = run(ts, alerts, [])
    assert [(r.state, r.severity, r.alerts, r.fields) for r in records] == [
        ("opened", "info", 1, ["cpu"]), ("updated", "info", 3, ["cpu", "mem"]),
        ("updated", "critical", 4, ["cpu", "mem"]), ("resolved", "critical", 5, ["cpu", "mem"])]
    assert len({r.id for r in records}) == 1
    assert records[-1].resolved == format_ts(ts[14] + QUIET) and records[-1].last_alert == format_ts(ts[14])
    assert records[-1].alert == "outlier-14" and records[-1].reason == "row 14"
    assert not tracker.open


def test_a_silent_entity_resolves_on_the_event_time_of_others_and_a_later_alert_opens_a_new_incident():
    ts = np.arange(200) * MINUTE
    alerts = [alert(5, ts[5], key="quiet-host"), alert(150, ts[150], key="quiet-host")]
    records, _ = run(ts, alerts, [])
    assert [r.state for r in records] == ["opened", "resolved", "opened", "resolved"]
    assert records[0].id == records[1].id != records[2].id == records[3].id
    # Until event time passes the quiet period, the incident stays open, however many rows arrive.
    records, tracker = run(ts[:20], alerts[:1], [])
    assert [r.state for r in records] == ["opened"] and len(tracker.open) == 1


def test_records_do_not_depend_on_how_rows_are_cut_into_batches():
    ts, alerts = stream()
    whole, _ = run(ts, alerts, [])
    assert {r.state for r in whole} == {"opened", "updated", "resolved"}
    rng = np.random.default_rng(1)
    for _ in range(5):
        cuts = sorted(set(rng.integers(1, len(ts), rng.integers(1, 40)).tolist()))
        assert run(ts, alerts, cuts)[0] == whole
    assert run(ts, alerts, list(range(1, len(ts))))[0] == whole  # one row a batch


def test_a_restored_snapshot_gives_the_same_records_as_an_uninterrupted_run():
    ts, alerts = stream(seed=2)
    whole, _ = run(ts, alerts, [1200])
    first, tracker = run(ts[:1200], [a for a in alerts if a.source.offset < 1200], [])
    assert tracker.open  # the cut falls inside open incidents
    restored = IncidentTracker(QUIET, RANKS)
    restored.restore(tracker.snapshot())
    rest = [a for a in alerts if a.source.offset >= 1200]
    second = restored.observe(ts[1200:], rest, lambda source: source.offset - 1200)
    assert first + second == whole


def test_alerts_of_operators_that_are_not_followed_open_nothing():
    ts = np.arange(10) * MINUTE
    records, _ = run(ts, [alert(1, ts[1], operator="regions")], [])
    assert records == []


@pytest.mark.parametrize("quiet", [0, QUIET])
def test_ids_are_stable_across_runs_and_differ_between_entities_and_operators(quiet):
    ts, alerts = stream(seed=3)
    first, _ = run(ts, alerts, [], IncidentTracker(quiet, RANKS))
    second, _ = run(ts, alerts, [], IncidentTracker(quiet, RANKS))
    assert first == second
    owners = {}
    for record in first:
        assert owners.setdefault(record.id, (record.key, record.operator)) == (record.key, record.operator)
    assert len({owner for owner in owners.values()}) > 6
