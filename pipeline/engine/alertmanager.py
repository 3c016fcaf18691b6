"""Incidents to Alertmanager: every incident record posted to Alertmanager's v2 API as an alert that fires and resolves.

:class:`AlertmanagerPublisher` turns the incident records of the dataflow (:mod:`operators.incidents`) into
Alertmanager alerts, so that incidents page through the routes, grouping, silences and inhibitions a team already has.
An incident is one alert:

* labels: ``alertname="VigilIncident"``, the entity's labels (``entity`` and the key parts,
  :mod:`pipeline.engine.entity_labels`), ``operator``, ``kind``, ``severity`` and ``[sinks.alertmanager] labels``;
* annotations: ``summary`` (one line), ``reason``, ``fields``, ``alerts`` (the count), ``incident_id``, ``opened``,
  ``score`` and, with ``dashboard_url``, ``dashboard``, which is also the alert's ``generatorURL``;
* ``startsAt``: when the incident opened; a ``resolved`` record sets ``endsAt``, when it resolved (event times both).

Alertmanager tells alerts apart by their labels, so an update that makes the severity worse starts a new alert: the
request that fires it also ends the alert of the old severity (``endsAt`` now), which would otherwise fire on until
Alertmanager's ``resolve_timeout``. For the same timeout (5 minutes by default) the open incidents are posted again
every ``repost_seconds``, and at once when Alertmanager is reachable again after an outage: it may have restarted, and
it keeps no alerts across restarts.

The posting runs in a daemon thread: :meth:`~AlertmanagerPublisher.publish` only queues, so a slow or absent
Alertmanager never holds up the dataflow. Each round posts everything queued, at most 1,000 alerts a request. A post
Alertmanager could not take (no connection, a timeout, 5xx, 429) is retried with back-off; a record still not taken
``retry_seconds`` after it was published, or one Alertmanager refused (4xx: it would refuse it again), is appended to
the dead-letter file as one JSON line, ``{"reason": "unreachable" | "rejected", "detail": ..., "incident": {...}}``,
and counted in ``vigil_alertmanager_dead_letters_total``. Re-posts of open incidents are only keep-alives: a failed one
is not dead-lettered.

Alertmanager sends one notification per group of alerts, so route Vigil's alerts with ``group_by: [alertname,
entity]`` (one page per entity, its operators' incidents together) or ``[alertname, operator]`` (one page per detector
across entities), with a ``group_wait`` (30 s, say) that lets an incident's first records share a notification, and
set ``send_resolved: true`` on the receivers so that the end of an incident is announced.

References: Alertmanager API v2, https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from operators.event import format_ts, parse_ts_ms
from operators.incidents import Incident
from pipeline.config import AlertmanagerConfig
from pipeline.engine.entity_labels import EntityLabels
from pipeline.engine.http_push import PushFailed, PushRefused, backoff, bearer_headers, post
from pipeline.engine.metrics import Metrics

log = logging.getLogger("vigil")

ALERTNAME = "VigilIncident"
MAX_ALERTS = 1_000  # per request: a backlog after an outage goes in several bodies of bounded size


class AlertmanagerDeadLetter(msgspec.Struct):
    """A line of the Alertmanager dead-letter file: an incident record Alertmanager never took."""

    reason: str  # rejected (a 4xx) or unreachable (not taken within retry_seconds, or before Vigil stopped)
    detail: str
    incident: Incident


@dataclass(eq=False)  # compared by identity: two equal records are still two records
class _Change:
    incident: Incident
    alerts: list[dict[str, Any]]  # the incident's alert, after the alert it supersedes when the severity changed
    queued: float  # time.monotonic() of publish


def dashboard_link(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by its value, URL-encoded.

    >>> dashboard_link("http://grafana:3000/d/vigil-series?var-entity={entity}&var-operator={operator}",
    ...                entity="web 1|checkout", operator="outlier")
    'http://grafana:3000/d/vigil-series?var-entity=web%201%7Ccheckout&var-operator=outlier'
    """
    for name, value in values.items():
        template = template.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
    return template


class AlertmanagerPublisher:
    """Posts incident records to Alertmanager from its own thread, started here (module docstring).

    :meth:`publish` may be called from any thread; :meth:`close` (also on leaving a ``with`` block) makes a last
    attempt and dead-letters what is left.
    """

    def __init__(self, config: AlertmanagerConfig, entity_labels: EntityLabels, metrics: Metrics,
                 dead_letter_path: Path) -> None:
        self.config = config
        self.entity_labels = entity_labels
        self.metrics = metrics
        self.dead_letter_path = dead_letter_path
        dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        self.url = config.url.rstrip("/") + "/api/v2/alerts"
        self.headers = {"Content-Type": "application/json",
                        **bearer_headers(config.bearer_token_env, config.bearer_token_file)}
        parts = urllib.parse.urlsplit(config.url)
        self._where = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # logged: without credentials
        self._lock = threading.Condition()
        # Under the lock: records published and not yet taken, records taken and not yet settled (posted, refused
        # or dead-lettered). close() dead-letters both if the thread does not finish in time.
        self._queue: list[tuple[float, Incident]] = []
        self._pending: list[_Change] = []
        self._closing = False
        self._abandoned = False  # close() has taken over what is left: the thread settles nothing more
        self._deadline = math.inf  # monotonic time by which close() wants the last attempt over
        self._firing: dict[str, dict[str, Any]] = {}  # the open incidents' alerts by incident id (thread only)
        self._refusal_logged = False
        self._thread = threading.Thread(target=self._run, name="vigil-alertmanager", daemon=True)
        self._thread.start()

    def publish(self, incidents: Sequence[Incident]) -> None:
        """Queue incident records for the posting thread; never waits for the network."""
        if not incidents:
            return
        queued = time.monotonic()
        with self._lock:
            if self._closing:
                raise RuntimeError("AlertmanagerPublisher.publish after close")
            self._queue += [(queued, incident) for incident in incidents]
            self._lock.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Post what is queued (for at most ``timeout`` seconds), stop the thread and dead-letter what is left as
        unreachable. Calling it again does nothing more."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + timeout
                self._lock.notify()
        self._thread.join(timeout)
        with self._lock:
            self._abandoned = True
            left = [change.incident for change in self._pending] + [incident for _, incident in self._queue]
            self._pending, self._queue = [], []
            self._write_dead_letters(left, "unreachable", "Vigil stopped before Alertmanager answered")

    def __enter__(self) -> AlertmanagerPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        delays: Iterator[float] | None = None  # back-off while Alertmanager cannot take posts
        retry_at = 0.0  # monotonic time the back-off allows the next post
        next_repost = time.monotonic() + self.config.repost_seconds
        while True:
            with self._lock:
                while not self._closing:
                    due = []
                    if self._queue or self._pending:
                        due.append(retry_at)
                    if self._pending:  # a last try when the oldest record's retry period ends
                        due.append(self._pending[0].queued + self.config.retry_seconds)
                    if self._firing:
                        due.append(max(next_repost, retry_at))
                    wait = min(due, default=math.inf) - time.monotonic()
                    if wait <= 0:
                        break
                    self._lock.wait(None if wait == math.inf else wait)
                closing = self._closing
                self._pending += [self._change(queued, incident) for queued, incident in self._queue]
                self._queue = []
                pending = list(self._pending)
            if closing:
                self._last_attempt(pending)
                return
            try:
                self._send(pending)
                if self._firing and time.monotonic() >= next_repost:
                    self._keep_alive()
                    next_repost = time.monotonic() + self.config.repost_seconds
            except PushFailed as failure:
                if self._closing:
                    continue  # the last attempt follows at once (or close has taken over)
                if delays is None:
                    delays = backoff(0.5, 30.0)
                    log.warning("Alertmanager at %s cannot take incidents (%s): retrying for up to %g s, then writing "
                                "them to %s", self._where, failure, self.config.retry_seconds, self.dead_letter_path)
                retry_at = time.monotonic() + next(delays)
                now = time.monotonic()
                self._settle([change for change in pending if now - change.queued >= self.config.retry_seconds],
                             "unreachable", str(failure))
            else:
                if delays is not None:  # every wake-up posts something, so Alertmanager answered
                    delays, retry_at = None, 0.0
                    next_repost = 0.0  # at once: a restarted Alertmanager has forgotten the open incidents
                    log.info("Alertmanager at %s takes incidents again", self._where)

    def _change(self, queued: float, incident: Incident) -> _Change:
        alert = self._alert(incident)
        alerts = [alert]
        previous = self._firing.pop(incident.id, None)
        if previous is not None and previous["labels"] != alert["labels"]:
            # Not before its start, which Alertmanager refuses (event times can run ahead of the wall clock).
            ends = max(time.time_ns() // 1_000_000, parse_ts_ms(previous["startsAt"]))
            alerts.insert(0, {**previous, "endsAt": format_ts(ends)})
        if incident.state != "resolved":
            self._firing[incident.id] = alert
        return _Change(incident, alerts, queued)

    def _alert(self, incident: Incident) -> dict[str, Any]:
        # Vigil's own labels last: a configured label cannot change an alert's identity.
        labels = {**self.config.labels, "alertname": ALERTNAME, **self.entity_labels.labels(incident.key),
                  "operator": incident.operator, "kind": incident.kind, "severity": incident.severity}
        fields = ", ".join(incident.fields)
        annotations = {"summary": " ".join(f"{incident.kind} incident on {incident.key}: {incident.reason}".split()),
                       "reason": incident.reason, "fields": fields, "alerts": str(incident.alerts),
                       "incident_id": incident.id, "opened": incident.opened, "score": f"{incident.score:.6g}"}
        alert: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": incident.opened}
        if self.config.dashboard_url:
            link = dashboard_link(self.config.dashboard_url, entity=incident.key, operator=incident.operator,
                                  fields=",".join(incident.fields), incident=incident.id)
            annotations["dashboard"] = alert["generatorURL"] = link
        if incident.state == "resolved":
            alert["endsAt"] = incident.resolved
        return alert

    def _send(self, changes: list[_Change]) -> None:
        """Post the changes' alerts; raises :class:`PushFailed` at the first request that failed, leaving the changes
        not posted pending."""
        for chunk in _chunks(changes):
            try:
                self._post([alert for change in chunk for alert in change.alerts])
            except PushRefused as refusal:
                if len(chunk) > 1:
                    # Alertmanager keeps the valid alerts of a request it refuses: post each change alone to find the
                    # ones it refused.
                    for change in chunk:
                        self._send([change])
                    continue
                (change,) = chunk
                if self._firing.get(change.incident.id) in change.alerts:
                    del self._firing[change.incident.id]  # its keep-alives would be refused as well
                self._refused(refusal)
                self._settle(chunk, "rejected", str(refusal))
            else:
                self._settle(chunk)

    def _keep_alive(self) -> None:
        alerts = list(self._firing.values())
        for start in range(0, len(alerts), MAX_ALERTS):
            with contextlib.suppress(PushRefused):  # counted; the change records it repeats were dead-lettered
                self._post(alerts[start:start + MAX_ALERTS])

    def _last_attempt(self, pending: list[_Change]) -> None:
        try:
            self._send(pending)
        except PushFailed as failure:
            self._settle(pending, "unreachable", str(failure))

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        timeout = min(self.config.timeout_seconds, self._deadline - time.monotonic())
        posts = self.metrics.alertmanager_posts
        try:
            if timeout <= 0:
                raise PushFailed("Vigil is stopping and its close timeout is over")
            post(self.url, msgspec.json.encode(alerts), self.headers, timeout)
        except PushRefused:
            posts.labels("rejected").inc()
            raise
        except PushFailed:
            posts.labels("error").inc()
            raise
        posts.labels("ok").inc()

    def _refused(self, refusal: PushRefused) -> None:
        if not self._refusal_logged:
            self._refusal_logged = True
            log.warning("Alertmanager at %s refused an incident (%s): it is written to %s, as any it refuses later "
                        "(counted in vigil_alertmanager_dead_letters_total)", self._where, refusal, self.dead_letter_path)

    def _settle(self, changes: list[_Change], reason: str | None = None, detail: str = "") -> None:
        """Take ``changes`` off the pending list, dead-lettering them with ``reason`` if given; those already settled
        (or taken over by close) are passed over."""
        settled = {id(change) for change in changes}
        with self._lock:
            if self._abandoned:
                return
            still = [change for change in self._pending if id(change) in settled]
            self._pending = [change for change in self._pending if id(change) not in settled]
            if reason is not None:
                self._write_dead_letters([change.incident for change in still], reason, detail)

    def _write_dead_letters(self, incidents: list[Incident], reason: str, detail: str) -> None:
        if not incidents:
            return
        with open(self.dead_letter_path, "ab") as handle:  # one write: whole lines
            handle.write(b"".join(msgspec.json.encode(AlertmanagerDeadLetter(reason, detail, incident)) + b"\n"
                                  for incident in incidents))
        self.metrics.alertmanager_dead_letters.labels(reason).inc(len(incidents))
        if reason == "unreachable" and self._closing:  # while running, the unreachable warning announced them
            log.warning("%d incident records Alertmanager did not take before Vigil stopped are in %s", len(incidents),
                        self.dead_letter_path)


def _chunks(changes: list[_Change]) -> Iterator[list[_Change]]:
    """The changes in runs of at most MAX_ALERTS alerts (a change's alerts stay in one request)."""
    chunk: list[_Change] = []
    size = 0
    for change in changes:
        if chunk and size + len(change.alerts) > MAX_ALERTS:
            yield chunk
            chunk, size = [], 0
        chunk.append(change)
        size += len(change.alerts)
    if chunk:
        yield chunk
