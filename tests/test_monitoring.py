"""End to end with a real Prometheus: a live ``vigil run`` on the embedded broker, scraped every second with the
repository's scrape config and rules (bench/monitoring.py). Every dashboard query and recording rule evaluates
without error, the core panels have data, and a burst of malformed events drives the dead-letter alert to firing."""
from __future__ import annotations

import threading

import pytest
import yaml
from kafka_helpers import stream

from bench.monitoring import PROMETHEUS_DIR, monitored_run, panel_queries, wait_until

pytestmark = pytest.mark.timeout(240)

# A panel of each core kind, by the recording rule it shows: throughput, alerts, lag, batch size, kernel latency.
CORE = ("vigil:events:rate5m", "vigil:alerts:rate5m", "vigil:consumer_lag_seconds:max", "vigil:event_lag_seconds:p99_5m",
        "vigil:batch_size:mean_5m", "vigil:kernel_seconds:p99_5m")


def records(count: int, bad_rate: float, seed: int):
    return ((r.key.encode(), r.payload, r.ts_ms) for r in stream(count, bad_rate=bad_rate, seed=seed).payloads())


def test_dashboards_and_rules_evaluate_on_a_real_run_and_a_malformed_burst_fires_an_alert(tmp_path):
    with monitored_run(tmp_path, fire_at_once=True) as run:
        prometheus = run.prometheus
        producer = threading.Thread(target=run.produce, args=(records(30_000, 0.01, 3), 2_000))
        producer.start()
        wait_until(lambda: prometheus.query('up{job="vigil"} == 1'), 30, "the first scrape")
        wait_until(lambda: all(prometheus.query(rule) for rule in CORE), 60, "data in every core panel's rule")
        assert not prometheus.alert_states().get("VigilHighDeadLetterRatio")  # 1% of malformed input: quiet

        queries = panel_queries()
        assert len(queries) >= 40 and {uid for uid, _, _ in queries} >= {
            "vigil-pipeline", "vigil-detection", "vigil-cnn", "vigil-privacy", "vigil-fairness"}
        results = {(uid, title, expr): prometheus.query(expr) for uid, title, expr in queries}  # raises on an error
        core = [key for key in results if key[0] == "vigil-pipeline" and any(rule in key[2] for rule in CORE)]
        core += [key for key in results if key[0] == "vigil-detection" and "vigil:alerts:rate5m" in key[2]]
        assert len(core) >= len(CORE) and all(results[key] for key in core), [key for key in core if not results[key]]
        rules = [rule for group in yaml.safe_load((PROMETHEUS_DIR / "vigil-rules.yml").read_text())["groups"]
                 for rule in group["rules"]]
        for rule in rules:
            prometheus.query(rule["expr"])  # every recording and alerting expression evaluates
        for name in ("vigil:snapshot_seconds:p99_5m", "vigil:score:p99_5m", "vigil:scores:rate5m"):
            assert prometheus.query(name), name  # snapshots and score histograms are exported and recorded

        producer.join()
        # A producer gone wrong: 3,000 records that are not JSON, then the alert rule (its `for` removed) fires.
        run.produce(((b"svc-%d" % i, b"\x00not json", 1_772_323_200_000 + i) for i in range(3_000)), 3_000)
        wait_until(lambda: "firing" in prometheus.alert_states().get("VigilHighDeadLetterRatio", set()), 60,
                   "VigilHighDeadLetterRatio to fire")
        # The recording rule agrees; its group is evaluated apart from the alert's, so its sample can be one
        # evaluation older (before the burst was scraped).
        wait_until(lambda: float(prometheus.query("vigil:events_invalid:ratio_rate5m")[0]["value"][1]) > 0.05, 10,
                   "the recorded dead-letter ratio to exceed 5%")
