"""Scrape the metrics endpoint over HTTP while a demo runs."""
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO

REQUIRED = {
    "vigil_events": "counter",
    "vigil_events_invalid": "counter",
    "vigil_alerts": "counter",
    "vigil_drift": "counter",
    "vigil_event_lag_seconds": "histogram",
    "vigil_batch_size": "histogram",
    "vigil_kernel_seconds": "histogram",
}


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return {f.name: f for f in text_string_to_metric_families(response.read().decode())}


def value(family, name, **labels):
    return sum(s.value for s in family.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_endpoint_during_a_run(port, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "demo", "--events", "40000", "--rate", "5000", "--bad-rate", "0.01",
         "--metrics-port", str(port), "--run-dir", str(tmp_path), "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        families, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                families = scrape(port)
                if value(families["vigil_event_lag_seconds"], "vigil_event_lag_seconds_count") > 5000:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert process.poll() is None, "the run ended before the endpoint was scraped"
        assert families is not None
        for name, kind in REQUIRED.items():
            assert families[name].type == kind, name

        valid = value(families["vigil_events"], "vigil_events_total", outcome="valid")
        invalid = value(families["vigil_events"], "vigil_events_total", outcome="invalid")
        assert 5000 < valid < 40000 and 0 < invalid < valid * 0.05
        assert value(families["vigil_events_invalid"], "vigil_events_invalid_total") == invalid

        batches = value(families["vigil_batch_size"], "vigil_batch_size_count")
        batched = value(families["vigil_batch_size"], "vigil_batch_size_sum")
        assert batches > 0 and 1 <= batched / batches <= 512

        lag = families["vigil_event_lag_seconds"]
        # The scrape may land inside a batch, between its observations: allow one batch of slack.
        assert batched - 512 <= value(lag, "vigil_event_lag_seconds_count") <= batched + 512
        assert value(lag, "vigil_event_lag_seconds_sum") > 0  # demo event times lie in the past

        kernel = families["vigil_kernel_seconds"]
        calls = value(kernel, "vigil_kernel_seconds_count", kernel="robust_ewma", device="cpu")
        assert batches - 1 <= calls <= batches + 1 and 0 < value(kernel, "vigil_kernel_seconds_sum") / calls < 1.0

        label_values = {v for f in families.values() for s in f.samples for v in s.labels.values()}
        assert not any(v.startswith("node-") for v in label_values), "entity keys must not be label values"
    finally:
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "Vigil demo summary" in out
