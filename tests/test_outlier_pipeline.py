"""Every outlier operator in one real `vigil run`: scores and p-values for every event, planted anomalies
alert, state size is exported, and the run is deterministic."""
import json

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from conftest import vigil

START_MS = 1_767_225_600_000
CONFIG = """
[source]
type = "file"
path = "{events}"

[sinks.scores]
type = "file"
path = "scores.jsonl"

[[operators]]
name = "z"
type = "zscore"
fields = ["cpu", "mem", "io"]
[operators.params]
alerting = {{ warmup = 100 }}

[[operators]]
name = "trees"
type = "hst"
fields = ["cpu", "mem", "io"]
[operators.params]
n_trees = 10
height = 6
window_size = 100
alerting = {{ warmup = 100 }}

[[operators]]
name = "mss"
type = "apre_mss"
fields = ["cpu", "mem", "io"]
[operators.params]
buffer_size = 512
warmup = 256
refit_every = 512
epochs = 200
refit_epochs = 20
k = 16
device = "cpu"
alerting = {{ warmup = 100 }}

[[operators]]
name = "combo"
type = "ape"
fields = ["user", "host"]
[operators.params]
warmup = 1000
minibatch = 128
device = "cpu"
alerting = {{ warmup = 100 }}

[[operators]]
name = "drift"
type = "drift"
fields = ["score:mss.p"]
"""
NUMERIC_SPIKE, CATEGORICAL_ODDITY = 5000, 5500


def write_events(path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6000):
        load = rng.normal()
        fields = {"cpu": 50 + 5 * load + rng.normal(), "mem": 30 + 3 * load + rng.normal(), "io": 10 + rng.normal()}
        if i == NUMERIC_SPIKE:
            fields = {"cpu": 50.0, "mem": 60.0, "io": 10.0}  # each field plausible alone, the pair is not
        user = int(rng.integers(20))
        host = f"h{user // 10}{rng.integers(3)}"  # users 0-9 use hosts h0*, users 10-19 hosts h1*
        if i == CATEGORICAL_ODDITY:
            user, host = 3, "h11"
        fields |= {"user": f"u{user}", "host": host}
        lines.append(json.dumps({"key": f"e{i % 4}", "ts": START_MS + (i // 4) * 60_000, "fields": fields}))
    path.write_text("\n".join(lines) + "\n")


def run(tmp_path, name):
    events = tmp_path / "events.jsonl"
    if not events.exists():
        write_events(events)
    config = tmp_path / "vigil.toml"
    config.write_text(CONFIG.format(events=events))
    vigil("run", "--config", str(config), "--run-dir", str(tmp_path / name), "--no-metrics")
    return tmp_path / name


def test_all_outlier_operators_score_calibrate_and_alert_in_one_run(tmp_path):
    out = run(tmp_path, "a")
    records = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(records) == 6000
    names = ("z", "trees", "mss", "combo")
    assert set(records[-1]["scores"]) == {*names, *(f"{n}.p" for n in names)}
    for name in names:
        assert all(r["scores"][f"{name}.p"] is not None for r in records[-500:]), name  # warm, calibrated

    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    flagged = {(a["operator"], a["source"]["line"] - 1) for a in alerts}
    assert ("mss", NUMERIC_SPIKE) in flagged  # off the cpu/mem correlation: the autoencoder sees it
    assert ("combo", CATEGORICAL_ODDITY) in flagged  # a user on a host of the other group
    oddity = next(a for a in alerts if a["operator"] == "combo" and a["source"]["line"] - 1 == CATEGORICAL_ODDITY)
    assert oddity["fields"] == ["user", "host"] and 0 < oddity["p_value"] < 1e-2

    samples = [sample for family in text_string_to_metric_families((out / "metrics.prom").read_text())
               for sample in family.samples]
    state = {sample.labels["operator"]: sample.value for sample in samples if sample.name == "vigil_operator_state_bytes"}
    assert set(state) == {*names, "drift"} and all(size > 0 for size in state.values())
    assert [sample.value for sample in samples if sample.name == "vigil_entities"] == [4]  # e0..e3

    again = run(tmp_path, "b")
    assert (again / "alerts.jsonl").read_bytes() == (out / "alerts.jsonl").read_bytes()
    assert (again / "scores.jsonl").read_bytes() == (out / "scores.jsonl").read_bytes()
