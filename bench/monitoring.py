"""A real Prometheus on loopback scraping a real ``vigil run``: the monitoring tests and the dashboard picture.

:func:`monitored_run` starts the embedded broker, a tailing ``vigil run`` with metrics and a recovery directory, and
Prometheus (the ``prometheus`` binary from Debian's package) with the repository's scrape config aimed at the run's
metrics port and the repository's rules loaded. Events are written with :meth:`MonitoredRun.produce`.
:func:`panel_queries` lists the PromQL of every panel of the Grafana dashboards, with their template variables
filled in, so that both can evaluate exactly what the dashboards show. :class:`Alertmanager` and
:class:`WebhookReceiver` are a real Alertmanager and a receiver of its webhook notifications, for the tests of the
Alertmanager sink.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Producer

from pipeline.config import KafkaConfig
from pipeline.demo.broker import EmbeddedBroker, free_port
from pipeline.engine.kafka import KafkaSettings, create_topics

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"

# Outlier scores with calibrated alerting, trend drift on the fields, and kNN + RS-Hash: the kernels and score
# histograms the dashboards show.
OPERATORS = """
[[operators]]
name = "outlier"
type = "zscore"
fields = ["cpu", "latency_ms", "requests", "error_rate"]
[operators.params]
warmup = 30
alerting = { warmup = 50 }

[[operators]]
name = "knn"
type = "knn_rshash"
fields = ["cpu", "latency_ms", "requests", "error_rate"]

[[operators]]
name = "drift"
type = "drift"
fields = ["cpu", "latency_ms", "requests", "error_rate"]
[operators.params]
detector = "trend_cusum"
"""


def ready(process: subprocess.Popen, url: str, name: str, log: Path | None = None) -> bool:
    """Whether a server answers its ``/-/ready`` (Prometheus's and Alertmanager's readiness endpoint); raises, with the
    end of its ``log``, if it exited."""
    if process.poll() is not None:
        tail = f":\n{log.read_text()[-3000:]}" if log is not None else ""
        raise RuntimeError(f"{name} exited with code {process.returncode}{tail}")
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Prometheus:
    """``prometheus`` on a loopback port with ``config`` (a dict) and the rule files beside it; with
    ``remote_write_receiver`` it also takes remote-write requests at ``/api/v1/write``."""

    def __init__(self, directory: Path, config: dict[str, Any], rules: dict[str, str], *,
                 remote_write_receiver: bool = False) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is missing: `make test` installs Debian's prometheus package (as root)")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        for name, text in rules.items():
            (directory / name).write_text(text)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"]
            + (["--web.enable-remote-write-receiver"] if remote_write_receiver else []),
            stdout=open(directory / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
        wait_until(lambda: ready(self.process, self.url, "prometheus"), 60, "Prometheus to be ready")

    def api(self, path: str, **params: Any) -> Any:
        """``data`` of a Prometheus HTTP API answer; an error answer raises with Prometheus's message."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            answer = json.load(error)
        if answer.get("status") != "success":
            raise ValueError(f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def alert_states(self) -> dict[str, set[str]]:
        """Alert name to the states (pending, firing) of its active alerts."""
        states: dict[str, set[str]] = {}
        for alert in self.api("alerts")["alerts"]:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class Alertmanager:
    """``prometheus-alertmanager`` on a loopback port (``port``, or a free one) with ``config`` (a dict), clustering
    off (no gossip port)."""

    def __init__(self, directory: Path, config: dict[str, Any], port: int | None = None) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise RuntimeError("alertmanager is missing: `make test` installs Debian's prometheus-alertmanager package "
                               "(as root)")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = directory / "alertmanager.log"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [binary, f"--config.file={directory / 'alertmanager.yml'}", f"--storage.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        wait_until(lambda: ready(self.process, self.url, "alertmanager", self.log), 60, "Alertmanager to be ready")

    def api_alerts(self, **params: Any) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (the alerts not yet resolved), with its query parameters (``filter``, ``active``)."""
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=30) as response:
            return json.load(response)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class WebhookReceiver:
    """An HTTP server on a loopback port that keeps the JSON bodies posted to it, in order, in :attr:`notifications`:
    what an Alertmanager ``webhook_config`` aimed at :attr:`url` sends."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        notifications = self.notifications

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # no line per request on stderr
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def scrape_config(metrics_port: int, interval: str) -> dict[str, Any]:
    """The repository's scrape config (deploy/prometheus/prometheus.yml) aimed at a loopback metrics port, with
    ``interval`` for scrapes and rule evaluation."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    return config


def rules_firing_at_once() -> str:
    """The repository's rules with every ``for`` removed, so that a short run can see an alert fire."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "vigil-rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    return yaml.safe_dump(rules, sort_keys=False)


@dataclass
class MonitoredRun:
    broker: EmbeddedBroker
    topic: str
    vigil: subprocess.Popen
    log: Path
    prometheus: Prometheus

    def produce(self, records: Iterable[tuple[bytes, bytes, int]], per_second: float = 0.0) -> int:
        """Write (key, value, event time in ms) records to the input topic, paced when ``per_second`` > 0."""
        return produce(self.broker.bootstrap, self.topic, records, per_second)


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes, int]], per_second: float = 0.0) -> int:
    """Write (key, value, event time in ms) records as a service would, paced when ``per_second`` > 0."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    started, sent = time.monotonic(), 0
    for key, value, ts_ms in records:
        producer.produce(topic, value, key, timestamp=ts_ms)
        sent += 1
        if per_second and sent % 100 == 0:
            producer.poll(0)
            time.sleep(max(0.0, started + sent / per_second - time.monotonic()))
    producer.flush(30)
    return sent


@contextlib.contextmanager
def monitored_run(directory: Path, *, interval: str = "1s", fire_at_once: bool = False,
                  partitions: int = 2) -> Iterator[MonitoredRun]:
    """A tailing ``vigil run`` on the embedded broker, with metrics, recovery and alerts to a Kafka topic, scraped
    by Prometheus every ``interval``; with ``fire_at_once`` the alert rules lose their ``for`` durations."""
    directory.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=directory / "tansu.log") as broker:
        suffix = uuid.uuid4().hex[:8]
        topic, alerts = f"events-{suffix}", f"alerts-{suffix}"
        create_topics(KafkaSettings(KafkaConfig(bootstrap_servers=[broker.bootstrap])), {topic: partitions, alerts: 1})
        metrics_port = free_port()
        config = directory / "vigil.toml"
        config.write_text(f"""
[run]
run_dir = "{directory / 'run'}"
[source]
type = "kafka"
topics = ["{topic}"]
mode = "tail"
start = "beginning"
[kafka]
bootstrap_servers = ["{broker.bootstrap}"]
group_id = "vigil-{suffix}"
[pipeline]
batch_max_wait_ms = 50
[recovery]
directory = "{directory / 'state'}"
snapshot_interval_seconds = 2
[metrics]
enabled = true
port = {metrics_port}
[sinks.alerts]
type = "kafka"
topic = "{alerts}"
""" + OPERATORS)
        log = directory / "vigil.log"
        vigil = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)], cwd=REPO,
                                 stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        prometheus = None
        try:
            wait_until(lambda: "metrics on http" in log.read_text(), 60, "vigil's metrics endpoint")
            rules = rules_firing_at_once() if fire_at_once else (PROMETHEUS_DIR / "vigil-rules.yml").read_text()
            prometheus = Prometheus(directory / "prometheus", scrape_config(metrics_port, interval),
                                    {"vigil-rules.yml": rules})
            yield MonitoredRun(broker, topic, vigil, log, prometheus)
            vigil.send_signal(signal.SIGTERM)
            if vigil.wait(60) != 0:
                raise RuntimeError(f"vigil run exited with code {vigil.returncode}:\n{log.read_text()[-3000:]}")
        finally:
            if prometheus is not None:
                prometheus.stop()
            if vigil.poll() is None:
                vigil.kill()
                vigil.wait()


# Grafana's template variables, as a dashboard shows them by default: every job, operator and so on.
_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def panel_queries(dashboards: Path = DASHBOARDS) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, PromQL) for every target of every panel, template variables filled in."""
    queries = []
    for path in sorted(dashboards.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in _VARIABLES.items():
                    expr = expr.replace(name, value)
                expr = re.sub(r"\$\{?(\w+)\}?", ".*", expr)  # $job, ${operator}: every value (used with =~)
                queries.append((dashboard["uid"], panel["title"], expr))
    return queries


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # panels folded into a row


def wait_until(condition, timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
