"""Wide events (ASD-shaped: 19 and 38 numeric fields, 12 servers, 5-minute rows): the default pipeline's outlier and
drift operators, in process and end to end through ``vigil run`` from a JSON-lines file.

* **operators**: the default multivariate path (``baseline`` then ``drift`` on the same fields) through one shard's
  :class:`operators.registry.OperatorChain` in batches of 4,096, against the three multivariate outlier operators it
  replaces as the choice for such events (``knn_rshash``, ``hst``, ``zscore``), each alone, on the same rows;
* **vigil run**: the default pipeline's two operators on those fields, file to alerts, with start-up included and
  after it (the run's own "run finished after" time).

The rows are a low-rank load (the servers' shared daily cycle and its noise) plus independent noise per field: what
the kernels see, not a claim about detection (that is ``bench_cross_dataset.py``).

    .venv/bin/python bench/bench_wide.py > bench/results/wide-events.md
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.suite import RUN_FINISHED  # noqa: E402
from operators.batch import FILE_PARTITION, Batch  # noqa: E402
from operators.registry import OPERATOR_TYPES, OperatorChain, OperatorSpec  # noqa: E402

SERVERS = 12
RUN_EVENTS = 300_000
STEP_MS = 300_000
BATCH = 4096
REPO = Path(__file__).resolve().parents[1]


def rows(n: int, fields: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    day = np.sin(2 * np.pi * np.arange(n) / (SERVERS * 288))[:, None]
    load = np.c_[day, rng.normal(size=(n, 2))] @ rng.normal(size=(3, fields))
    return 50 + 10 * load + rng.normal(size=(n, fields))


def chain_rate(types: list[str], fields: int, n: int) -> float:
    names = [f"m{i}" for i in range(fields)]
    specs = [OperatorSpec(t, f"{t}_{i}", tuple(names), OPERATOR_TYPES[t].Params()) for i, t in enumerate(types)]
    chain = OperatorChain.build(specs, max_entities=SERVERS)
    values = rows(n, fields)
    keys = np.array([f"server-{i % SERVERS}" for i in range(n)], dtype=object)

    def batch(part: slice) -> Batch:
        count = part.stop - part.start
        return Batch(keys[part], np.zeros(count, dtype=np.int64), np.arange(part.start, part.stop) * (STEP_MS // SERVERS),
                     np.full(count, "f", dtype=object), np.full(count, FILE_PARTITION, dtype=np.int64),
                     np.arange(part.start, part.stop, dtype=np.int64),
                     numeric={name: values[part, j] for j, name in enumerate(names)})

    chain.run(batch(slice(0, BATCH)))  # compilation and the first allocations
    start = time.perf_counter()
    for first in range(BATCH, n, BATCH):
        chain.run(batch(slice(first, min(first + BATCH, n))))
    return (n - BATCH) / (time.perf_counter() - start)


def run_rate(fields: int, n: int) -> tuple[float, float, int]:
    """Events per second of ``vigil run`` over ``n`` events, with start-up and after it, and the alerts written."""
    names = [f"m{i}" for i in range(fields)]
    values = rows(n, fields, seed=1)
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory)
        with open(out / "events.jsonl", "w") as handle:
            for i in range(n):
                handle.write(json.dumps({"key": f"server-{i % SERVERS}", "ts": i * (STEP_MS // SERVERS),
                                         "fields": dict(zip(names, values[i].round(4).tolist()))}) + "\n")
        (out / "vigil.toml").write_text(f"""
[run]
run_dir = "run"
[source]
type = "file"
path = "events.jsonl"
[[operators]]
name = "outlier"
type = "baseline"
fields = {json.dumps(names)}
[[operators]]
name = "drift"
type = "drift"
fields = {json.dumps(names)}
[sinks.alerts]
type = "file"
path = "alerts.jsonl"
[metrics]
enabled = false
""")
        start = time.perf_counter()
        result = subprocess.run([str(REPO / ".venv" / "bin" / "vigil"), "run", "--config", str(out / "vigil.toml")],
                                check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        flow_seconds = float(RUN_FINISHED.search(result.stdout + result.stderr).group(1))
        alerts = len((out / "run" / "alerts.jsonl").read_text().splitlines())
    return n / seconds, n / flow_seconds, alerts


def main() -> None:
    print("# Wide events: the default pipeline on 19 and 38 numeric fields (12 servers, 5-minute rows)\n")
    print("`.venv/bin/python bench/bench_wide.py` on this machine's 2 shared cores; one process, one shard.\n")
    print("| fields | flow | events/s | events/s after start-up |")
    print("|---|---|---|---|")
    for fields in (19, 38):
        flows = [("baseline + drift (the default path), operators only", ["baseline", "drift"], 200_000),
                 ("zscore alone, operators only", ["zscore"], 200_000),
                 ("knn_rshash alone, operators only", ["knn_rshash"], 30_000),
                 ("hst alone, operators only", ["hst"], 12_000),
                 ("zscore + knn_rshash + hst, operators only", ["zscore", "knn_rshash", "hst"], 12_000)]
        for label, types, n in flows:
            print(f"| {fields} | {label} | {chain_rate(types, fields, n):,.0f} | |")
        rate, flow_rate, alerts = run_rate(fields, RUN_EVENTS)
        print(f"| {fields} | `vigil run`, JSON-lines file to alerts ({RUN_EVENTS:,} events, {alerts} alerts) | "
              f"{rate:,.0f} | {flow_rate:,.0f} |")

if __name__ == "__main__":
    main()
