"""The Alertmanager sink against a real Alertmanager (Debian's prometheus-alertmanager, bench/monitoring.py) whose
receiver is a real webhook: an incident fires, gets worse and resolves in the notifications; an absent Alertmanager
leaves the records in the dead-letter file, or delivers them once it comes up; what Alertmanager refuses is
dead-lettered as rejected, and only that."""
from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import msgspec
import pytest

from bench.monitoring import Alertmanager, WebhookReceiver, wait_until
from operators.event import format_ts, parse_ts_ms
from operators.incidents import Incident
from pipeline.config import AlertmanagerConfig, SchemaConfig
from pipeline.demo.broker import free_port
from pipeline.engine.alertmanager import AlertmanagerDeadLetter, AlertmanagerPublisher
from pipeline.engine.entity_labels import EntityLabels
from pipeline.engine.metrics import Metrics

pytestmark = pytest.mark.timeout(120)

ENTITY_LABELS = EntityLabels(SchemaConfig(preset="flat", key=["tags.host", "service"], key_separator="|"))
DASHBOARD = "http://grafana.example/d/vigil-series?var-entity={entity}&var-operator={operator}&var-incident={incident}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def incident(id: str, state: str, key: str, severity: str, opened_ms: int, *, alerts: int = 1,
             fields: tuple[str, ...] = ("cpu",), resolved: str | None = None) -> Incident:
    return Incident(id, state, key, "outlier", "outlier", severity, format_ts(opened_ms),
                    format_ts(opened_ms + 1_000 * alerts), alerts, list(fields), "cpu=97 (z 9.1)", 9.1, f"alert-{alerts}",
                    resolved)


def routing(webhook_url: str) -> dict:
    return {"route": {"receiver": "vigil", "group_by": ["alertname", "entity"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "vigil", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}]}


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def alertmanager(tmp_path, webhook):
    process = Alertmanager(tmp_path / "alertmanager", routing(webhook.url))
    yield process
    process.stop()


def notified(webhook: WebhookReceiver, entity: str, status: str, **labels: str) -> list[tuple[dict, dict]]:
    """(notification, alert) for each alert of ``entity``'s group with ``status`` and ``labels``."""
    return [(notification, alert) for notification in list(webhook.notifications)
            if notification["groupLabels"].get("entity") == entity for alert in notification["alerts"]
            if alert["status"] == status and labels.items() <= alert["labels"].items()]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def dead_letters(path: Path) -> list[AlertmanagerDeadLetter]:
    if not path.exists():
        return []
    return [msgspec.json.decode(line, type=AlertmanagerDeadLetter) for line in path.read_bytes().splitlines()]


def test_an_incident_fires_gets_worse_and_resolves_and_an_open_one_stays_firing(tmp_path, alertmanager, webhook):
    metrics = Metrics(alertmanager=True)
    config = AlertmanagerConfig(url=alertmanager.url + "/", dashboard_url=DASHBOARD, labels={"team": "sre"},
                                repost_seconds=1.0)
    dead_letter_path = tmp_path / "run" / "alertmanager_dead_letters.jsonl"
    opened_ms = now_ms() - 60_000
    first = "web-1|checkout"
    with AlertmanagerPublisher(config, ENTITY_LABELS, metrics, dead_letter_path) as publisher:
        publisher.publish([incident("a1", "opened", first, "info", opened_ms),
                           incident("b1", "opened", "web-2|checkout", "warning", opened_ms)])
        wait_until(lambda: notified(webhook, first, "firing", severity="info"), 30, "the incident's first notification")
        notification, alert = notified(webhook, first, "firing")[0]
        assert notification["status"] == "firing" and notification["groupLabels"] == {"alertname": "VigilIncident",
                                                                                      "entity": first}
        labels = {"alertname": "VigilIncident", "entity": first, "host": "web-1", "service": "checkout",
                  "operator": "outlier", "kind": "outlier", "severity": "info", "team": "sre"}
        assert alert["labels"] == labels
        link = "http://grafana.example/d/vigil-series?var-entity=web-1%7Ccheckout&var-operator=outlier&var-incident=a1"
        assert alert["annotations"] == {
            "summary": "outlier incident on web-1|checkout: cpu=97 (z 9.1)", "reason": "cpu=97 (z 9.1)",
            "fields": "cpu", "alerts": "1", "incident_id": "a1", "opened": format_ts(opened_ms), "score": "9.1",
            "dashboard": link}
        assert alert["generatorURL"] == link and parse_ts_ms(alert["startsAt"]) == opened_ms

        # Worse: a new severity is a new label set, and the old one must end rather than fire on.
        publisher.publish([incident("a1", "updated", first, "critical", opened_ms, alerts=3,
                                    fields=("cpu", "latency_ms"))])

        def superseded():  # a notification with the critical alert firing and the info one ended
            return [(notification, critical, alert) for notification, critical in notified(
                webhook, first, "firing", severity="critical") for alert in notification["alerts"]
                if alert["labels"]["severity"] == "info" and alert["status"] == "resolved"]

        wait_until(superseded, 30, "the critical notification, the info alert resolved")
        notification, critical, info = superseded()[0]
        assert info["labels"] == labels and parse_ts_ms(info["endsAt"]) <= now_ms()
        assert critical["labels"] == {**labels, "severity": "critical"}
        assert critical["annotations"]["alerts"] == "3"
        assert critical["annotations"]["fields"] == "cpu, latency_ms"

        resolved = format_ts(now_ms() - 1_000)
        publisher.publish([incident("a1", "resolved", first, "critical", opened_ms, alerts=3,
                                    fields=("cpu", "latency_ms"), resolved=resolved)])
        wait_until(lambda: any(notification["status"] == "resolved"
                               for notification, _ in notified(webhook, first, "resolved", severity="critical")),
                   30, "the resolved notification")
        notification, ended = notified(webhook, first, "resolved", severity="critical")[-1]
        assert {alert["status"] for alert in notification["alerts"]} == {"resolved"}
        assert ended["labels"] == {**labels, "severity": "critical"} and ended["annotations"]["incident_id"] == "a1"
        assert parse_ts_ms(ended["endsAt"]) == parse_ts_ms(resolved)
        statuses = [notification["status"] for notification in webhook.notifications
                    if notification["groupLabels"]["entity"] == first]
        assert statuses[0] == "firing" and statuses[-1] == "resolved"

        # The second incident stays open and firing; nothing of the first is left.
        active = alertmanager.api_alerts()
        assert [alert["labels"]["entity"] for alert in active] == ["web-2|checkout"]
        (open_alert,) = active
        assert open_alert["status"]["state"] == "active" and open_alert["labels"] == {
            **labels, "entity": "web-2|checkout", "host": "web-2", "severity": "warning"}
        assert notified(webhook, "web-2|checkout", "firing", severity="warning")
        # Re-posted every repost_seconds: Alertmanager sees it updated.
        wait_until(lambda: alertmanager.api_alerts()[0]["updatedAt"] != open_alert["updatedAt"], 30, "a re-post")
    assert sample(metrics, "vigil_alertmanager_posts_total", outcome="ok") >= 4
    assert sample(metrics, "vigil_alertmanager_posts_total", outcome="error") == 0
    assert not dead_letter_path.exists()


def test_records_alertmanager_never_takes_are_dead_lettered_as_unreachable(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_ALERTMANAGER_TOKEN", "s3cret-token")
    metrics = Metrics(alertmanager=True)
    config = AlertmanagerConfig(url=f"http://127.0.0.1:{free_port()}", retry_seconds=2.0, timeout_seconds=1.0,
                                bearer_token_env="VIGIL_TEST_ALERTMANAGER_TOKEN")
    dead_letter_path = tmp_path / "run" / "alertmanager_dead_letters.jsonl"
    opened_ms = now_ms() - 60_000
    records = [incident("c1", "opened", "web-3|checkout", "info", opened_ms),
               incident("c1", "resolved", "web-3|checkout", "info", opened_ms, resolved=format_ts(now_ms()))]
    with caplog.at_level(logging.INFO, logger="vigil"):
        with AlertmanagerPublisher(config, ENTITY_LABELS, metrics, dead_letter_path) as publisher:
            publisher.publish(records)
            wait_until(lambda: len(dead_letters(dead_letter_path)) == 2, 30, "the records in the dead-letter file")
    letters = dead_letters(dead_letter_path)
    assert [letter.incident for letter in letters] == records
    assert {letter.reason for letter in letters} == {"unreachable"} and all(letter.detail for letter in letters)
    assert sample(metrics, "vigil_alertmanager_dead_letters_total", reason="unreachable") == 2
    assert sample(metrics, "vigil_alertmanager_posts_total", outcome="error") >= 2  # retried before giving up
    warnings = [record for record in caplog.records if record.name == "vigil" and record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot take incidents" in warnings[0].getMessage()  # once, not per retry
    assert "s3cret-token" not in caplog.text


def test_records_published_while_alertmanager_is_down_arrive_when_it_comes_up(tmp_path, webhook, caplog):
    port = free_port()
    metrics = Metrics(alertmanager=True)
    config = AlertmanagerConfig(url=f"http://127.0.0.1:{port}", retry_seconds=60.0, timeout_seconds=2.0)
    dead_letter_path = tmp_path / "alertmanager_dead_letters.jsonl"
    with caplog.at_level(logging.INFO, logger="vigil"):
        with AlertmanagerPublisher(config, ENTITY_LABELS, metrics, dead_letter_path) as publisher:
            publisher.publish([incident("d1", "opened", "web-4|checkout", "critical", now_ms() - 60_000)])
            wait_until(lambda: sample(metrics, "vigil_alertmanager_posts_total", outcome="error") >= 1, 30,
                       "a failed post")
            alertmanager = Alertmanager(tmp_path / "alertmanager", routing(webhook.url), port=port)
            try:
                wait_until(lambda: [alert["labels"]["entity"] for alert in alertmanager.api_alerts()]
                           == ["web-4|checkout"], 60, "the alert in Alertmanager")
                wait_until(lambda: notified(webhook, "web-4|checkout", "firing", severity="critical"), 30,
                           "its notification")
            finally:
                alertmanager.stop()
    assert not dead_letter_path.exists()
    assert sample(metrics, "vigil_alertmanager_posts_total", outcome="ok") >= 1
    messages = [(record.levelname, record.getMessage()) for record in caplog.records if record.name == "vigil"]
    assert [level for level, _ in messages] == ["WARNING", "INFO"] and "again" in messages[1][1]


def test_what_alertmanager_refuses_is_dead_lettered_as_rejected_and_only_that(tmp_path, alertmanager):
    opened_ms = now_ms() - 60_000
    # A label name Alertmanager refuses: every record is refused.
    metrics = Metrics(alertmanager=True)
    dead_letter_path = tmp_path / "bad-label" / "alertmanager_dead_letters.jsonl"
    config = AlertmanagerConfig(url=alertmanager.url, labels={"bad-label": "x"})
    refused = incident("e1", "opened", "web-5|checkout", "info", opened_ms)
    with AlertmanagerPublisher(config, ENTITY_LABELS, metrics, dead_letter_path) as publisher:
        publisher.publish([refused])
        wait_until(lambda: dead_letters(dead_letter_path), 30, "the dead letter")
    (letter,) = dead_letters(dead_letter_path)
    assert letter.reason == "rejected" and letter.incident == refused
    assert letter.detail.startswith("HTTP 400") and 'invalid name \\"bad-label\\"' in letter.detail
    assert sample(metrics, "vigil_alertmanager_dead_letters_total", reason="rejected") == 1
    assert sample(metrics, "vigil_alertmanager_posts_total", outcome="rejected") == 1

    # One request with a valid record and one that ends before it starts: Alertmanager keeps the valid alert and
    # refuses the request; each record is then posted alone, and only the refused one is dead-lettered.
    metrics = Metrics(alertmanager=True)
    dead_letter_path = tmp_path / "backwards" / "alertmanager_dead_letters.jsonl"
    config = AlertmanagerConfig(url=alertmanager.url)
    valid = incident("f1", "opened", "web-6|checkout", "info", opened_ms)
    backwards = incident("g1", "resolved", "web-7|checkout", "info", opened_ms, resolved=format_ts(opened_ms - 1))
    with AlertmanagerPublisher(config, ENTITY_LABELS, metrics, dead_letter_path) as publisher:
        publisher.publish([valid, backwards])
        wait_until(lambda: dead_letters(dead_letter_path), 30, "the dead letter")
    (letter,) = dead_letters(dead_letter_path)
    assert letter.reason == "rejected" and letter.incident == backwards
    assert letter.detail.startswith("HTTP 400") and "start time must be before end time" in letter.detail
    assert [alert["labels"]["entity"] for alert in alertmanager.api_alerts()] == ["web-6|checkout"]
    assert sample(metrics, "vigil_alertmanager_posts_total", outcome="rejected") == 2  # the pair, then it alone
    assert sample(metrics, "vigil_alertmanager_posts_total", outcome="ok") == 1


def test_close_dead_letters_what_alertmanager_has_not_taken_within_its_timeout(tmp_path, caplog):
    metrics = Metrics(alertmanager=True)
    dead_letter_path = tmp_path / "alertmanager_dead_letters.jsonl"
    records = [incident("h1", "opened", "web-8|checkout", "info", now_ms() - 60_000),
               incident("h2", "opened", "web-9|checkout", "info", now_ms() - 60_000)]
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes connections and never answers
        config = AlertmanagerConfig(url=f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_seconds=60.0)
        publisher = AlertmanagerPublisher(config, ENTITY_LABELS, metrics, dead_letter_path)
        publisher.publish(records)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="vigil"):
            publisher.close(timeout=1.0)
        assert time.monotonic() - started < 10  # the close timeout, not the request's
        publisher.close()  # again: nothing more
        with pytest.raises(RuntimeError):
            publisher.publish(records)
    letters = dead_letters(dead_letter_path)
    assert [letter.incident for letter in letters] == records and {letter.reason for letter in letters} == {"unreachable"}
    assert sample(metrics, "vigil_alertmanager_dead_letters_total", reason="unreachable") == 2
    assert "did not take before Vigil stopped" in caplog.text
