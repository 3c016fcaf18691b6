"""End to end with the servers an SRE runs: a live ``vigil run`` on the embedded broker remote-writes per-series values,
scores and expected bands to a real Prometheus (``--web.enable-remote-write-receiver``), which also scrapes its metrics,
and posts incidents to a real Alertmanager whose webhook receiver is a local HTTP server. A planted incident on one host
appears in both; series beyond the cap are dropped and counted; with Alertmanager down, every incident record reaches
the Alertmanager dead-letter file."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from bench.monitoring import (REPO, Alertmanager, Prometheus, WebhookReceiver, panel_queries, produce, scrape_config,
                              wait_until)
from pipeline.config import KafkaConfig
from pipeline.demo.broker import EmbeddedBroker, free_port
from pipeline.engine.kafka import KafkaSettings, create_topics

pytestmark = pytest.mark.timeout(300)

HOSTS = 20
PER_HOST_SECONDS = 0.25  # each host sends an event this often (wall clock = event time)
WARM, INCIDENT, AFTER = 36.0, 8.0, 16.0  # seconds of normal data, of the planted incident, and after it
PLANTED = "web-3"  # of service search, as every odd host
# The default outlier operator on two fields, warmed up for a one-minute stream; 2 fields + (score, incident, 3 x 2
# band series) = 10 series per host, so the cap of 190 exports 19 of the 20 hosts: the one left out is dropped, and
# replaces the least recently anomalous member each time it alerts.
OPERATORS = """
[[operators]]
name = "outlier"
type = "baseline"
fields = ["latency_ms", "cpu"]
[operators.params]
warmup = 20
alerting = { warmup = 80 }
"""
MAX_SERIES = 190


def fleet(started: float, rng: np.random.Generator):
    """(key, value, event time) records of every host in wall-clock time; the planted host's latency jumps during the
    incident."""
    step = 0
    while (offset := step * PER_HOST_SECONDS) < WARM + INCIDENT + AFTER:
        ts_ms = round((started + offset) * 1000)
        for h in range(HOSTS):
            host = f"web-{h}"
            latency = 100.0 + 10.0 * rng.normal() + (400.0 if host == PLANTED and WARM <= offset < WARM + INCIDENT else 0.0)
            event = {"host": host, "service": ("checkout", "search")[h % 2], "ts": ts_ms,
                     "latency_ms": round(latency, 2), "cpu": round(40.0 + 5.0 * rng.normal(), 2)}
            yield host.encode(), json.dumps(event).encode(), ts_ms
        step += 1
        time.sleep(max(0.0, started + step * PER_HOST_SECONDS - time.time()))


def vigil_config(directory: Path, *, source: str, metrics_port: int, alertmanager: str, remote_write: str = "") -> Path:
    config = directory / "vigil.toml"
    config.write_text(f"""
[run]
run_dir = "{directory / 'run'}"
{source}
[source.schema]
preset = "flat"
key = ["host", "service"]
time = "ts"
time_unit = "ms"
[pipeline]
batch_max_wait_ms = 50
[metrics]
enabled = true
port = {metrics_port}
[incidents]
quiet_seconds = 4
[sinks.incidents]
type = "file"
path = "incidents.jsonl"
[sinks.alertmanager]
url = "{alertmanager}"
retry_seconds = 1
repost_seconds = 5
dashboard_url = "http://grafana.example/d/vigil-series?var-entity={{entity}}"
[remote_write]
url = "{remote_write}"
interval_seconds = 1
max_series = {MAX_SERIES}
""" + OPERATORS)
    return config


def alertmanager_config(webhook: str) -> dict:
    return {"route": {"receiver": "webhook", "group_by": ["alertname", "entity"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook, "send_resolved": True}]}]}


def series(prometheus: Prometheus, expr: str, start: float, end: float) -> dict[float, float]:
    (result,) = prometheus.query_range(expr, start, end, 1)
    return {float(t): float(v) for t, v in result["values"]}


def test_a_live_run_remote_writes_series_and_pages_through_alertmanager(tmp_path):
    webhook = WebhookReceiver()
    alertmanager = prometheus = vigil = None
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        topic = f"events-{uuid.uuid4().hex[:8]}"
        create_topics(KafkaSettings(KafkaConfig(bootstrap_servers=[broker.bootstrap])), {topic: 2})
        try:
            alertmanager = Alertmanager(tmp_path / "alertmanager", alertmanager_config(webhook.url))
            metrics_port = free_port()
            prometheus = Prometheus(tmp_path / "prometheus", scrape_config(metrics_port, "1s"), {},
                                    remote_write_receiver=True)
            source = f"""[source]
type = "kafka"
topics = ["{topic}"]
mode = "tail"
start = "beginning"
[kafka]
bootstrap_servers = ["{broker.bootstrap}"]
group_id = "vigil-{topic}"
"""
            config = vigil_config(tmp_path, source=source, metrics_port=metrics_port, alertmanager=alertmanager.url,
                                  remote_write=f"{prometheus.url}/api/v1/write")
            log = tmp_path / "vigil.log"
            vigil = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)], cwd=REPO,
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT)
            wait_until(lambda: "metrics on http" in log.read_text(), 60, "vigil's metrics endpoint")
            started = time.time()
            producer = threading.Thread(target=produce, args=(broker.bootstrap, topic,
                                                              fleet(started, np.random.default_rng(5))))
            producer.start()
            producer.join()

            def planted(status: str) -> list[dict]:
                return [alert for note in webhook.notifications for alert in note["alerts"]
                        if alert["labels"].get("host") == PLANTED and alert["status"] == status]

            wait_until(lambda: planted("resolved"), 60, "the planted incident to resolve in Alertmanager")
            wait_until(lambda: prometheus.query('vigil_export_dropped_total{reason="cap"} > 0'), 30,
                       "the cap's drops to be scraped")
            time.sleep(2)  # the last interval's samples
            end = time.time()

            # Alertmanager: the planted incident, once, firing with the entity's labels, then resolved.
            incidents = {alert["annotations"]["incident_id"] for alert in planted("firing") + planted("resolved")}
            assert len(incidents) == 1, incidents
            firing = planted("firing")[0]
            assert {k: firing["labels"][k] for k in ("alertname", "entity", "host", "service", "operator")} == {
                "alertname": "VigilIncident", "entity": f"{PLANTED}/search", "host": PLANTED, "service": "search",
                "operator": "outlier"}
            assert "latency_ms" in firing["annotations"]["fields"] and "expected" in firing["annotations"]["reason"]
            assert firing["annotations"]["dashboard"].endswith(f"var-entity={PLANTED}%2Fsearch")
            first = next(i for i, note in enumerate(webhook.notifications) if any(
                a["labels"].get("host") == PLANTED for a in note["alerts"]))
            assert webhook.notifications[first]["status"] == "firing"
            records = [json.loads(line) for line in (tmp_path / "run" / "incidents.jsonl").read_text().splitlines()]
            assert {r["id"] for r in records if r["key"] == f"{PLANTED}/search"} == incidents

            # Prometheus: value, score and band of the planted host; the band holds its normal values.
            where = f'host="{PLANTED}", field="latency_ms"'
            value = series(prometheus, f"vigil_series_value{{{where}}}", started, end)
            lower = series(prometheus, f"vigil_series_lower{{{where}}}", started, end)
            upper = series(prometheus, f"vigil_series_upper{{{where}}}", started, end)
            score = series(prometheus, f'vigil_series_score{{host="{PLANTED}"}}', started, end)
            during = [t for t in value if started + WARM + 1 <= t <= started + WARM + INCIDENT - 1]
            normal = [t for t in value if t in lower and t in upper and not started + WARM - 1 <= t <= started + WARM
                      + INCIDENT + 6]
            assert len(normal) >= 5 and during, ([round(t - started) for t in value], [round(t - started) for t in lower])
            inside = [lower[t] <= value[t] <= upper[t] for t in normal]
            assert np.mean(inside) >= 0.9, np.mean(inside)
            assert np.mean([value[t] > upper[t] for t in during if t in upper]) >= 0.5  # the incident is outside
            assert max(score[t] for t in during if t in score) > np.quantile([score[t] for t in normal if t in score],
                                                                           0.95)

            # The cap: at most MAX_SERIES / 10 hosts exported at any time, the others' samples dropped and counted.
            exported = prometheus.query_range("count(count by (entity) (vigil_series_value))", started, end, 1)
            assert max(float(v) for _, v in exported[0]["values"]) <= MAX_SERIES // 10
            assert float(prometheus.query("max(vigil_exported_series)")[0]["value"][1]) <= MAX_SERIES
            # Every query of the series dashboard has data.
            empty = [(title, expr) for uid, title, expr in panel_queries() if uid == "vigil-series"
                     and not prometheus.query(expr)]
            assert not empty, empty
        finally:
            if vigil is not None:
                vigil.terminate()
                assert vigil.wait(60) == 0, (tmp_path / "vigil.log").read_text()[-3000:]
            for server in (prometheus, alertmanager):
                if server is not None:
                    server.stop()
            webhook.close()


def test_with_alertmanager_down_every_incident_record_is_dead_lettered(tmp_path):
    rng = np.random.default_rng(2)
    lines = []
    for i in range(3000):
        host = f"web-{i % 10}"
        latency = 100 + 10 * rng.normal() + (500 if host == PLANTED and 1500 <= i < 1600 else 0)
        lines.append(json.dumps({"host": host, "service": "checkout", "ts": 1_767_225_600_000 + i * 6000,
                                 "latency_ms": latency, "cpu": 40 + 5 * rng.normal()}))
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = vigil_config(tmp_path, source=f'[source]\ntype = "file"\npath = "{events}"\n', metrics_port=0,
                          alertmanager=closed)
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)], cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Alertmanager" in result.stderr and "cannot take incidents" in result.stderr
    incidents = [json.loads(line) for line in (tmp_path / "run" / "incidents.jsonl").read_text().splitlines()]
    letters = [json.loads(line) for line in
               (tmp_path / "run" / "alertmanager_dead_letters.jsonl").read_text().splitlines()]
    assert incidents and any(r["key"] == f"{PLANTED}/checkout" for r in incidents)
    assert {letter["reason"] for letter in letters} == {"unreachable"}
    assert sorted((r["id"], r["state"]) for r in incidents) == sorted(
        (letter["incident"]["id"], letter["incident"]["state"]) for letter in letters)
    metrics = (tmp_path / "run" / "metrics.prom").read_text()
    assert f'vigil_alertmanager_dead_letters_total{{reason="unreachable"}} {float(len(letters))}' in metrics
