"""dp_count: the budget ledger across restarts and kill -9, the releases' error bars, and the CLI with a real run."""
import json
import os
import signal
import subprocess
import sys
import time

import msgspec
import numpy as np

from conftest import REPO, vigil
from operators.batch import Batch
from operators.dp_count import DpCountOperator, DpCountParams
from operators.event import Event, SourcePosition
from operators.privacy.ledger import BudgetLedger

START = 1_767_225_600_000
CATEGORIES = ["north", "south", "east"]


def events(n: int, seed: int = 0, key: str = "desk") -> list[Event]:
    rng = np.random.default_rng(seed)
    regions = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    return [Event(key, START + i * 10_000, {"region": CATEGORIES[r]}, SourcePosition(file="f", line=i))
            for i, r in enumerate(regions)]


def operator(ledger, **params) -> DpCountOperator:
    defaults = dict(categories=CATEGORIES, window_seconds=600, horizon=32, rho=0.5, budget=1.0, ledger=str(ledger), seed=1)
    return DpCountOperator("regions", ["region"], DpCountParams(**{**defaults, **params}))


def test_releases_are_close_to_the_true_counts_within_their_error_bars(tmp_path):
    stream = events(6000)
    op = operator(tmp_path, horizon=128)
    alerts = op.process(Batch.from_events(stream, numeric=[], text=["region"]))
    last = alerts[-1].reason
    window = int(last.split()[1])
    truth = {c: sum(1 for e in stream[: window * 60] if e.fields["region"] == c) for c in CATEGORIES}
    for category in CATEGORIES:
        value, error = (float(v) for v in last.split(f"{category} ")[1].split(",")[0].split(";")[0].split(" ± "))
        assert abs(value - truth[category]) <= 5 * error, (category, value, truth[category], error)
    assert op.totals["released"] == len(alerts) == 99 and op.totals["late"] == 0


def test_a_restarted_operator_resumes_the_spent_budget_and_refuses_beyond_it(tmp_path):
    first = operator(tmp_path)
    first.process(Batch.from_events(events(400), numeric=[], text=["region"]))
    assert BudgetLedger(tmp_path, "regions", 1.0).spent("desk") == 0.5
    # A restart without the operator's state: its counters start a new epoch, paid on top of the first.
    second = operator(tmp_path)
    second.process(Batch.from_events(events(400, seed=1), numeric=[], text=["region"]))
    assert second.ledger.spent("desk") == 1.0 and second.streams["desk"].epoch == 1
    third = operator(tmp_path)
    alerts = third.process(Batch.from_events(events(400, seed=2), numeric=[], text=["region"]))
    assert third.ledger.spent("desk") == 1.0  # never beyond the budget
    assert alerts and all("budget exhausted: last release repeated" in a.reason for a in alerts)
    assert third.totals["refused"] == len(alerts) and third.totals["released"] == 0


def test_a_restore_from_an_older_snapshot_pays_for_the_replayed_releases(tmp_path):
    live = operator(tmp_path, budget=2.0)
    stream = events(600)
    live.process(Batch.from_events(stream[:200], numeric=[], text=["region"]))
    state = live.snapshot()
    live.process(Batch.from_events(stream[200:400], numeric=[], text=["region"]))  # released, then "crashed"
    assert live.ledger.spent("desk") == 0.5
    restarted = operator(tmp_path, budget=2.0)
    restarted.restore(state)
    restarted.process(Batch.from_events(stream[200:], numeric=[], text=["region"]))  # the replay: fresh noise
    assert restarted.ledger.spent("desk") == 1.0
    records = [json.loads(line) for line in (tmp_path / "regions.jsonl").read_text().splitlines()]
    assert [r["why"] for r in records if "spend" in r] == ["epoch", "replay"]


WORKER = """
import sys, time
from operators.batch import Batch
from operators.dp_count import DpCountOperator, DpCountParams
from operators.event import Event, SourcePosition
op = DpCountOperator("regions", ["region"], DpCountParams(categories=["north", "south", "east"], window_seconds=600,
                     horizon=4096, rho=0.25, budget=1.0, ledger=sys.argv[1]))
for i in range(100000):
    event = Event("desk", 1767225600000 + i * 10_000, {"region": ["north", "south", "east"][i % 3]},
                  SourcePosition(file="f", line=i))
    for alert in op.process(Batch.from_events([event], numeric=[], text=["region"])):
        print(alert.reason.split(":")[0], flush=True)  # a release goes out
    time.sleep(0.0005)
"""


def test_kill_9_mid_run_leaves_every_release_in_the_ledger_and_a_restart_pays_again(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    time.sleep(4.0)
    os.kill(process.pid, signal.SIGKILL)
    released = [line.split() for line in process.communicate()[0].splitlines() if line.startswith("window")]
    assert len(released) > 5
    ledger = BudgetLedger(tmp_path, "regions", 1.0)
    last_step = max(int(words[1]) for words in released)
    assert ledger.released_steps("desk", 0) >= last_step  # written ahead of every release that went out
    assert ledger.spent("desk") == 0.25
    # The restart (no recovery state) starts a new epoch and pays for it; the ledger says how much is left.
    again = operator(tmp_path, rho=0.25, horizon=4096, seed=-1)
    again.process(Batch.from_events(events(200), numeric=[], text=["region"]))
    assert again.ledger.spent("desk") == 0.5 and again.streams["desk"].epoch == 1


def test_vigil_runs_dp_count_from_a_config_and_exports_the_budget(tmp_path):
    lines = [msgspec.json.encode({"key": e.key, "ts": e.ts_ms, "fields": e.fields}) for e in events(3000)]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "vigil.toml").write_text(f"""
[source]
type = "file"
path = "{tmp_path / 'events.jsonl'}"
[run]
run_dir = "{tmp_path / 'run'}"
[metrics]
enabled = false
[[operators]]
name = "regions"
type = "dp_count"
fields = ["region"]
[operators.params]
categories = ["north", "south", "east"]
window_seconds = 600
horizon = 64
mechanism = "smooth"
rho = 0.5
budget = 1.0
ledger = "{tmp_path / 'ledger'}"
""")
    vigil("run", "--config", str(tmp_path / "vigil.toml"))
    alerts = [json.loads(line) for line in (tmp_path / "run" / "alerts.jsonl").read_text().splitlines()]
    assert len(alerts) == 49 and {a["kind"] for a in alerts} == {"dp_count"}
    metrics = (tmp_path / "run" / "metrics.prom").read_text()
    assert 'vigil_dp_budget_spent{operator="regions"} 0.5' in metrics
    assert 'vigil_dp_budget_total{operator="regions"} 1.0' in metrics
    assert 'vigil_dp_releases_total{operator="regions",outcome="released"} 49.0' in metrics
    north = float(metrics.split('vigil_dp_released_count{category="north",operator="regions"} ')[1].split()[0])
    assert abs(north - sum(e.fields["region"] == "north" for e in events(3000)[:2940])) < 30  # the last release
    poor = tmp_path / "poor.toml"
    poor.write_text((tmp_path / "vigil.toml").read_text().replace("budget = 1.0", "budget = 0.1"))
    refused = vigil("config", "check", str(poor), check=False)
    assert refused.returncode != 0 and "operators[0].params.budget" in refused.stdout + refused.stderr
