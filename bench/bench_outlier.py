"""Throughput of the batched outlier operator against river, measured in the same run.

Both score-then-learn every event of a multi-entity stream:

* ``vigil zscore``: :class:`operators.zscore.ZScoreOperator`, micro-batches across entities on torch;
* ``river HST``: one ``river.anomaly.HalfSpaceTrees`` per entity behind a ``MinMaxScaler``, called per
  event, the usual Python-stack baseline (river's defaults except ``seed``). Its trees are built in an
  untimed warm-up pass, as vigil's first batch is, so only steady-state scoring is compared.

Usage: ``python bench/bench_outlier.py [--events N] [--entities N] [--batch N] [--device cpu|cuda]``.
Prints a table and one JSON line (events/s and the ratio).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from river import anomaly, compose, preprocessing

from operators.base import Batch
from operators.event import Event, SourcePosition
from operators.zscore import ZScoreOperator, ZScoreParams

FIELDS = ("f0", "f1", "f2", "f3")


def make_events(n: int, entities: int, seed: int = 0) -> list[Event]:
    values = np.random.default_rng(seed).normal(size=(n, len(FIELDS)))
    return [
        Event(f"e{i % entities}", i, dict(zip(FIELDS, row.tolist())), SourcePosition(topic="bench", partition=0, offset=i))
        for i, row in enumerate(values)
    ]


def bench_vigil(events: list[Event], batch: int, device: str) -> float:
    operator = ZScoreOperator("outlier", FIELDS, ZScoreParams(device=device))
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        operator.process(Batch(events[start : start + batch]))
    return len(events) / (time.perf_counter() - started)


def bench_river(events: list[Event], warmup: list[Event]) -> float:
    # Trees are built on an entity's first learn_one; that happens untimed, in the warm-up pass.
    models: dict[str, compose.Pipeline] = {}
    for event in warmup:
        if event.key not in models:
            models[event.key] = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
        models[event.key].learn_one(event.fields)
    started = time.perf_counter()
    for event in events:
        model = models[event.key]
        model.score_one(event.fields)
        model.learn_one(event.fields)
    return len(events) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the stream (default 100000)")
    parser.add_argument("--river-events", type=int, default=20_000, help="events given to river, which is slower (default 20000)")
    parser.add_argument("--entities", type=int, default=1000, help="distinct entities (default 1000)")
    parser.add_argument("--batch", type=int, default=4096, help="micro-batch size for vigil (default 4096)")
    parser.add_argument("--device", default="cpu", help="torch device for vigil (default cpu)")
    args = parser.parse_args()

    events = make_events(args.events, args.entities)
    bench_vigil(events[: args.batch], args.batch, args.device)  # warm-up: allocations, torch dispatch caches
    vigil_rate = bench_vigil(events, args.batch, args.device)
    river_rate = bench_river(events[args.entities : args.entities + args.river_events], events[: args.entities])
    result = {
        "events": args.events,
        "entities": args.entities,
        "batch": args.batch,
        "device": args.device,
        "vigil_zscore_events_per_s": round(vigil_rate),
        "river_hst_events_per_s": round(river_rate),
        "ratio": round(vigil_rate / river_rate, 1),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    print(f"{'scorer':<14}{'events/s':>12}")
    print(f"{'vigil zscore':<14}{vigil_rate:>12,.0f}")
    print(f"{'river HST':<14}{river_rate:>12,.0f}")
    print(f"ratio {vigil_rate / river_rate:.1f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
