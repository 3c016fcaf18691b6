"""Drift alarms on the demo stream: the default trend CUSUM on the fields against ADWIN on the outlier score.

    .venv/bin/python bench/bench_drift.py > bench/results/drift-demo.md

For each seed, the demo's service metrics (``pipeline.demo.synthetic.SyntheticStream``, 200,000 events of 50
entities, no malformed events) run through the default configuration's ``outlier`` operator and one drift operator,
in process, in batches of 1,000 events (scores do not depend on the batching). Precision and recall are those of the
demo summary (``pipeline.demo.synthetic.evaluate``: an alert is true inside any incident window of its entity; an
incident is found by any outlier or drift alert in its window). "delay" is the median time from a gradual drift's
onset to the drift operator's first alarm in its window. ``vigil demo`` gives the same figures through Kafka, except
that a few events are replaced by malformed ones there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operators.batch import Batch  # noqa: E402
from operators.drift import DriftParams  # noqa: E402
from operators.event import Event, SourcePosition, parse_ts_ms  # noqa: E402
from operators.registry import OperatorChain, OperatorSpec  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.demo.synthetic import FIELDS, SyntheticStream, evaluate  # noqa: E402

DEFAULT_TOML = Path(__file__).resolve().parent.parent / "pipeline" / "default.toml"


def events(stream: SyntheticStream) -> list[Event]:
    values, _ = stream._values(0, stream.ticks, np.random.default_rng(stream._noise_seed))
    return [Event(key, stream._ts(tick, entity), dict(zip(FIELDS, values[tick, entity].tolist())),
                  SourcePosition(topic="demo", partition=0, offset=tick * stream.n_entities + entity))
            for tick in range(stream.ticks) for entity, key in enumerate(stream.keys)
            if tick * stream.n_entities + entity < stream.events]


def run(specs: list[OperatorSpec], stream_events: list[Event]) -> list[tuple[str, int, str]]:
    chain = OperatorChain.build(specs, max_entities=100_000)
    alerts = []
    for start in range(0, len(stream_events), 1000):
        batch = Batch.from_events(stream_events[start:start + 1000], numeric=chain.numeric_inputs, text=chain.text_inputs)
        alerts += [(a.key, parse_ts_ms(a.ts), a.operator) for a in chain.run(batch)]
    return alerts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="7,8,9")
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    specs = {spec.name: spec for spec in load_config(DEFAULT_TOML).operator_specs()}
    variants = {"trend_cusum on the four fields (default)": specs["drift"],
                "adwin on score:outlier (before)": OperatorSpec("drift", "drift", ("score:outlier",),
                                                                DriftParams(detector="adwin", detector_params={"delta": 0.002}))}
    print(f"Command: `{' '.join(['.venv/bin/python', 'bench/bench_drift.py', *sys.argv[1:]])}`\n")
    print("| seed | drift operator | drift alerts | drift precision | gradual drifts found | gradual-drift recall "
          "| recall on spikes and level shifts | drift operator's own gradual drifts | delay (median, minutes) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        stream = SyntheticStream(events=args.events, entities=50, seed=seed)
        stream_events = events(stream)
        for name, drift in variants.items():
            alerts = run([specs["outlier"], drift], stream_events)
            result = evaluate(stream.incidents, alerts)
            drift_alerts = [(key, ts) for key, ts, operator in alerts if operator == "drift"]
            delays = []
            for incident in (i for i in stream.incidents if i.kind == "drift"):
                hits = [ts for key, ts in drift_alerts if key == incident.key and incident.start_ms <= ts <= incident.end_ms]
                if hits:
                    delays.append((min(hits) - incident.start_ms) / 60_000)
            print(f"| {seed} | {name} | {len(drift_alerts)} | {result.precision('drift'):.3f} | "
                  f"{result.detected['drift']}/{result.incidents['drift']} | {result.recall(('drift',)):.3f} | "
                  f"{result.recall(('spike', 'level_shift')):.3f} | {len(delays)} | "
                  f"{np.median(delays) if delays else float('nan'):.0f} |", flush=True)


if __name__ == "__main__":
    main()
