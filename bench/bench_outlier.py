"""Scoring throughput of every outlier operator against river, measured in the same run.

Each operator runs in a one-operator chain (entity index, then ``process``: score, calibrated alerting,
learning) over columnar micro-batches of a multi-entity stream, as a shard does in the pipeline. The
reference is the usual Python-stack way:
one ``river.anomaly.HalfSpaceTrees`` per entity behind a ``MinMaxScaler``, with ``score_one`` then
``learn_one`` per event (river's defaults except ``seed``). Every scorer first sees an untimed warm-up
stream (trees built, the autoencoder's first fit, calibration windows filled), so only steady-state
scoring is timed; the autoencoder's periodic refits happen inside the timed part and are included.

Usage: ``python bench/bench_outlier.py [--events N] [--entities N] [--batch N] [--device cpu|cuda]
[--operators zscore,hst,metric_stream,knn,knn_rshash,ape,apre_mss] [--threads N]``. Prints a table and one JSON line
(events/s and ratios).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from river import anomaly, compose, preprocessing

from operators.alerting import AlertingParams
from operators.apre_mss import ApreMssParams
from operators.ape import ApeParams
from operators.batch import Batch
from operators.event import Event, SourcePosition
from operators.hst import HalfSpaceTreesParams
from operators.knn import KnnParams
from operators.knn_ensemble import KnnEnsembleParams
from operators.metric_stream import MetricStreamParams
from operators.registry import OperatorChain, OperatorSpec
from operators.zscore import ZScoreParams

NUMERIC = ("f0", "f1", "f2", "f3")
CATEGORICAL = ("user", "host", "process")
ALERTING = AlertingParams(warmup=50)


def operator_specs(device: str) -> dict[str, OperatorSpec]:
    return {
        "zscore": OperatorSpec("zscore", "zscore", NUMERIC, ZScoreParams(alerting=ALERTING)),
        "hst": OperatorSpec("hst", "hst", NUMERIC, HalfSpaceTreesParams(alerting=ALERTING)),
        "metric_stream": OperatorSpec("metric_stream", "metric_stream", NUMERIC, MetricStreamParams(alerting=ALERTING)),
        "knn": OperatorSpec("knn", "knn", NUMERIC, KnnParams(alerting=ALERTING)),
        "knn_rshash": OperatorSpec("knn_rshash", "knn_rshash", NUMERIC, KnnEnsembleParams(alerting=ALERTING)),
        "ape": OperatorSpec("ape", "ape", CATEGORICAL, ApeParams(device=device, warmup=1000, alerting=ALERTING)),
        "apre_mss": OperatorSpec("apre_mss", "apre_mss", NUMERIC, ApreMssParams(device=device, alerting=ALERTING)),
    }


def make_events(n: int, entities: int, seed: int = 0, first_offset: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(NUMERIC)))
    users, hosts, processes = rng.integers(0, 500, n), rng.integers(0, 50, n), rng.integers(0, 30, n)
    events = []
    for i, row in enumerate(values):
        categories = {"user": f"u{users[i]}", "host": f"h{hosts[i]}", "process": f"p{processes[i]}"}
        fields = dict(zip(NUMERIC, row.tolist())) | categories
        offset = first_offset + i
        position = SourcePosition(topic="bench", partition=0, offset=offset)
        events.append(Event(f"e{offset % entities}", offset * 1000, fields, position))
    return events


def bench_operator(spec: OperatorSpec, warmup: list[Event], events: list[Event], batch: int) -> float:
    """Events per second of the operator's chain (entity index, scoring, calibrated alerting) over columnar batches,
    built before the clock starts as the engine hands them over."""
    chain = OperatorChain.build([spec], max_entities=1_000_000)
    columns = lambda part: Batch.from_events(part, numeric=chain.numeric_inputs, text=chain.text_inputs)  # noqa: E731
    for start in range(0, len(warmup), batch):
        chain.run(columns(warmup[start : start + batch]))
    batches = [columns(events[start : start + batch]) for start in range(0, len(events), batch)]
    started = time.perf_counter()
    for part in batches:
        chain.run(part)
    return len(events) / (time.perf_counter() - started)


def bench_river(warmup: list[Event], events: list[Event]) -> float:
    models: dict[str, compose.Pipeline] = {}
    for event in warmup:
        if event.key not in models:
            models[event.key] = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
        models[event.key].learn_one({name: event.fields[name] for name in NUMERIC})
    started = time.perf_counter()
    for event in events:
        model = models[event.key]
        x = {name: event.fields[name] for name in NUMERIC}
        model.score_one(x)
        model.learn_one(x)
    return len(events) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="timed events per operator (default 50000)")
    parser.add_argument("--river-events", type=int, default=10_000,
                        help="timed events for river, which is slower (default 10000)")
    parser.add_argument("--warmup-events", type=int, default=0,
                        help="untimed events first (default: enough for every entity's trees and calibration)")
    parser.add_argument("--entities", type=int, default=50, help="distinct entities (default 50)")
    parser.add_argument("--batch", type=int, default=512, help="micro-batch size (default 512, the pipeline default)")
    parser.add_argument("--device", default="cpu", help="torch device for the operators (default cpu)")
    parser.add_argument("--operators", default="zscore,hst,metric_stream,knn,knn_rshash,ape,apre_mss",
                        help="comma-separated operator types")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, as pipeline.torch_threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    warmup_events = args.warmup_events or args.entities * 300  # HST's first window (250) and alerting's warm-up (50)
    warmup = make_events(warmup_events, args.entities, seed=1)
    events = make_events(args.events, args.entities, seed=2, first_offset=warmup_events)
    specs = operator_specs(args.device)
    rates = {name: bench_operator(specs[name], warmup, events, args.batch) for name in args.operators.split(",")}
    river_rate = bench_river(warmup, events[: args.river_events])
    result = {
        "events": args.events,
        "entities": args.entities,
        "batch": args.batch,
        "device": args.device,
        "events_per_s": {name: round(rate) for name, rate in rates.items()},
        "river_hst_events_per_s": round(river_rate),
        "ratio_to_river_hst": {name: round(rate / river_rate, 2) for name, rate in rates.items()},
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "threads": torch.get_num_threads(),
    }
    print(f"{'scorer':<22}{'events/s':>12}{'vs river HST':>14}")
    for name, rate in rates.items():
        print(f"{'vigil ' + name:<22}{rate:>12,.0f}{rate / river_rate:>13.2f}x")
    print(f"{'river HST (reference)':<22}{river_rate:>12,.0f}{1:>13.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
