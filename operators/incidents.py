"""Incidents: per entity and operator, a run of alerts becomes one incident that opens, updates and resolves.

A stream of per-event alerts pages far too often: a level shift or an outage raises an alert per gated crossing, and
what an on-call engineer wants is one page that says "host-7's latency, since 14:02, worst: critical" and later
"resolved". :class:`IncidentTracker` groups the alerts of each (entity key, operator):

* the first alert **opens** an incident, with an id derived from the entity, the operator and that alert's id (a
  replay of the same input gives the same incidents with the same ids);
* a later alert of the same entity and operator joins it while the incident is open. The incident is **updated**
  (one record) when the alert makes it worse: a rarer severity, or a field not yet named. Every record carries the
  alert count, the worst severity, the fields, and the latest alert's reason and score;
* it **resolves** once the shard's event time passes its last alert by ``quiet_seconds``. Event time is the running
  maximum of the event times the shard has seen (its watermark), so an entity that falls silent still resolves. A
  shard that sees no events at all keeps its incidents open. ``resolved`` is the last alert's time plus the quiet
  period, whatever batch carried the event that passed it.

Rows are taken in order and resolutions are checked before each alert's row, so the records do not depend on how the
events were cut into batches; the open incidents are plain data for snapshots.

>>> from operators.event import Alert, SourcePosition, format_ts
>>> def alert(offset, minute, severity="info", fields=("cpu",)):
...     return Alert(f"a{offset}", "host-1", format_ts(minute * 60_000), "outlier", "outlier", 9.0, severity,
...                  "cpu=97", list(fields), SourcePosition(topic="m", partition=0, offset=offset))
>>> tracker = IncidentTracker(quiet_ms=15 * 60_000, severity_ranks={"outlier": {"info": 1.0, "critical": 100.0}})
>>> minutes = np.arange(50) * 60_000
>>> alerts = [alert(2, 2), alert(3, 3), alert(5, 5, "critical"), alert(40, 40)]
>>> for incident in tracker.observe(minutes, alerts, lambda source: source.offset):
...     print(incident.state, incident.severity, incident.alerts, incident.resolved)
opened info 1 None
updated critical 3 None
resolved critical 3 1970-01-01T00:20:00.000Z
opened info 1 None
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgspec
import numpy as np

from operators.event import Alert, SourcePosition, format_ts

IncidentState = Literal["opened", "updated", "resolved"]
FIELDS = ("id", "key", "operator", "kind", "severity", "opened_ms", "last_ms", "alerts", "fields", "reason", "score",
          "alert")


class Incident(msgspec.Struct):
    """One change of an incident: ``opened``, ``updated`` (worse) or ``resolved``."""

    id: str
    state: IncidentState
    key: str
    operator: str
    kind: str
    severity: str  # the worst so far
    opened: str  # the first alert's event time
    last_alert: str
    alerts: int
    fields: list[str]  # every field the incident's alerts named, in the order first named
    reason: str  # the latest alert's
    score: float
    alert: str  # the id of the latest alert
    resolved: str | None = None  # the last alert's time plus the quiet period


def incident_id(key: str, operator: str, first_alert: str) -> str:
    """Deterministic 16-hex-digit id of the incident that ``first_alert`` (an alert id) opened.

    >>> incident_id("host-1", "outlier", "23b6b20e95433a20")
    '34f42d61a339be6c'
    """
    return hashlib.blake2b(f"{key}|{operator}|{first_alert}".encode(), digest_size=8).hexdigest()


class IncidentTracker:
    """The open incidents of one shard.

    ``quiet_ms``: event time without an alert after which an incident resolves. ``severity_ranks``: the operators whose
    alerts open incidents (others' alerts are passed over), each with its severity names' rarities (larger is worse;
    a name without a rank counts as 0).
    """

    def __init__(self, quiet_ms: int, severity_ranks: Mapping[str, Mapping[str, float]]) -> None:
        self.quiet_ms = int(quiet_ms)
        self.severity_ranks = {operator: dict(ranks) for operator, ranks in severity_ranks.items()}
        self.open: dict[tuple[str, str], dict[str, Any]] = {}
        self.watermark = np.iinfo(np.int64).min

    def observe(self, ts_ms: np.ndarray, alerts: Sequence[Alert], row_of: Callable[[SourcePosition], int]) -> list[Incident]:
        """The incident records of one batch: ``ts_ms``, its rows' event times, its alerts, and ``row_of``, the row
        of an alert's source position."""
        if not len(ts_ms):
            return []
        watermarks = np.maximum.accumulate(np.maximum(np.asarray(ts_ms, dtype=np.int64), self.watermark))
        followed = [(row_of(alert.source), alert) for alert in alerts if alert.operator in self.severity_ranks]
        records: list[Incident] = []
        for row, alert in sorted(followed, key=lambda pair: pair[0]):  # stable: operators' order within a row
            records += self._resolve(int(watermarks[row]))
            records += self._join(alert, int(ts_ms[row]))
        records += self._resolve(int(watermarks[-1]))
        self.watermark = int(watermarks[-1])
        return records

    def _resolve(self, watermark: int) -> list[Incident]:
        due = [state for state in self.open.values() if state["last_ms"] + self.quiet_ms < watermark]
        records = []
        for state in sorted(due, key=lambda state: (state["last_ms"], state["id"])):
            del self.open[state["key"], state["operator"]]
            records.append(self._record(state, "resolved", resolved=format_ts(state["last_ms"] + self.quiet_ms)))
        return records

    def _join(self, alert: Alert, ts_ms: int) -> list[Incident]:
        state = self.open.get((alert.key, alert.operator))
        if state is None:
            state = {"id": incident_id(alert.key, alert.operator, alert.id), "key": alert.key,
                     "operator": alert.operator, "kind": alert.kind, "severity": alert.severity, "opened_ms": ts_ms,
                     "last_ms": ts_ms, "alerts": 1, "fields": list(alert.fields), "reason": alert.reason,
                     "score": alert.score, "alert": alert.id}
            self.open[alert.key, alert.operator] = state
            return [self._record(state, "opened")]
        ranks = self.severity_ranks.get(alert.operator, {})
        worse = ranks.get(alert.severity, 0.0) > ranks.get(state["severity"], 0.0)
        new_fields = [name for name in alert.fields if name not in state["fields"]]
        state.update(last_ms=max(state["last_ms"], ts_ms), alerts=state["alerts"] + 1, reason=alert.reason,
                     score=alert.score, alert=alert.id, fields=state["fields"] + new_fields)
        if worse:
            state["severity"] = alert.severity
        return [self._record(state, "updated")] if worse or new_fields else []

    @staticmethod
    def _record(state: dict[str, Any], change: IncidentState, resolved: str | None = None) -> Incident:
        return Incident(state["id"], change, state["key"], state["operator"], state["kind"], state["severity"],
                        format_ts(state["opened_ms"]), format_ts(state["last_ms"]), state["alerts"],
                        list(state["fields"]), state["reason"], float(state["score"]), state["alert"], resolved)

    def open_records(self) -> list[Incident]:
        """Each open incident as it stands (state ``updated``): for a consumer that must be told again after a restart.
        """
        return [self._record(state, "updated") for state in self.open.values()]

    def snapshot(self) -> dict[str, Any]:
        """The open incidents and the watermark, as plain data."""
        return {"watermark": self.watermark,
                "open": [[state[name] for name in FIELDS] for state in self.open.values()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.watermark = int(state["watermark"])
        self.open = {}
        for values in state["open"]:
            incident = dict(zip(FIELDS, values))
            self.open[incident["key"], incident["operator"]] = incident
