"""Online fair decisions: throughput of the fair_decision and fairness_monitor operators, batched, against the usual
Python online learner and the storage-based fairness baseline, measured in the same run.

The stream is the demo's loan desk (:mod:`pipeline.demo.applicants`): applications (a decision each) and, hours later,
their labels (joined by id, then learned from), about 1.9 events per application. Rows:

* ``fair_decision`` at λ = 0 and λ = 1, and ``fairness_monitor`` on its decisions, each over the columnar batches the
  engine hands an operator (256 and 4,096 events), timed after a warm-up batch: decisions per second, each with its
  label's join and learning step;
* the usual stack: river's ``HoeffdingAdaptiveTreeClassifier`` with ``predict_one`` then ``learn_one`` per labelled
  application, no fairness (the per-event Python loop Vigil replaces);
* the kernels alone, per labelled instance: Aranyani's aggregate-based fairness step against the reservoir baseline
  that recomputes the parity penalty over 100 stored samples per group each step (the approach the paper avoids).

No GPU rows: the learner is a sequential compiled loop (one Adam step per label, a few hundred parameters), which a
GPU would not speed up; the operator has no device parameter.

    .venv/bin/python bench/bench_fairness.py > bench/results/fairness.md
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.aranyani import FairLearner, ObliqueForest, ReservoirFairLearner  # noqa: E402
from operators.batch import Batch  # noqa: E402
from operators.event import Event, SourcePosition  # noqa: E402
from operators.fair_decision import FairDecisionOperator, FairDecisionParams  # noqa: E402
from operators.fairness_monitor import FairnessMonitorOperator, FairnessMonitorParams  # noqa: E402
from operators.label_join import LabelParams  # noqa: E402
from pipeline.demo.applicants import FIELDS, ApplicantStream  # noqa: E402

LABELS = LabelParams(positive=["1"], ttl_seconds=43200.0)


def loan_events(applications: int, seed: int = 7) -> list[Event]:
    stream = ApplicantStream(applications=applications, start_ms=0, span_ms=applications * 30_000, seed=seed)
    return [Event(event["key"], ts, event["fields"], SourcePosition(file="loans", line=i), label=event.get("label"),
                  group=event.get("group"), id=event["id"]) for i, (ts, event) in enumerate(stream.events())]


def operator_rate(make, events: list[Event], batch_size: int) -> float:
    """Decisions (applications) per second of a fresh operator over ``events``, their labels included, in batches (the
    first batch, a warm-up, not timed)."""
    batches = [Batch.from_events(events[s:s + batch_size], numeric=[*FIELDS, "score:credit"], text=[])
               for s in range(0, len(events), batch_size)]
    decider, monitor = make()
    decider.process(batches[0])
    if monitor:
        monitor.process(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        decider.process(batch)
        if monitor:
            batch.numeric["score:credit"] = batch.scores["credit"]
            monitor.process(batch)
    return sum(e.label is None for e in events[batch_size:]) / (time.perf_counter() - start)


def river_rate(events: list[Event]) -> float:
    """The usual stack: predict, then learn, per labelled application (labels known at once), in Python."""
    from river import tree

    model = tree.HoeffdingAdaptiveTreeClassifier(seed=0)
    rows = [(e.fields, e.group) for e in events if e.label is None]
    labels = {e.id: e.label == "1" for e in events if e.label is not None}
    ids = [e.id for e in events if e.label is None]
    start = time.perf_counter()
    for (fields, group), app in zip(rows, ids):
        x = {**fields, "group_b": float(group == "b")}
        model.predict_one(x)
        if app in labels:
            model.learn_one(x, labels[app])
    return len(rows) / (time.perf_counter() - start)


def kernel_rates(rows: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    x, y, groups = rng.normal(size=(rows, 6)), rng.integers(0, 2, rows), rng.integers(0, 2, rows)
    rates = {}
    for name, learner in (("aranyani", FairLearner(ObliqueForest(6, seed=0), fairness=1.0)),
                          ("reservoir", ReservoirFairLearner(ObliqueForest(6, seed=0), fairness=1.0, capacity=100))):
        learner.learn(x[:200], y[:200], groups[:200])  # compiles
        start = time.perf_counter()
        learner.learn(x[200:], y[200:], groups[200:])
        rates[name] = (rows - 200) / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applications", type=int, default=40_000)
    parser.add_argument("--kernel-rows", type=int, default=20_000)
    args = parser.parse_args()
    events = loan_events(args.applications)

    def decider(fairness: float, with_monitor: bool = False):
        def make():
            op = FairDecisionOperator("credit", list(FIELDS), FairDecisionParams(groups=["a", "b"], fairness=fairness,
                                                                                 labels=LABELS))
            monitor = FairnessMonitorOperator("parity", ["score:credit"], FairnessMonitorParams(groups=["a", "b"],
                                                                                               labels=LABELS))
            return op, monitor if with_monitor else None
        return make

    usual = river_rate(events)
    print(f"# Online fair decisions: operator throughput ({platform.processor() or platform.machine()}, "
          f"{len(events):,} events: {args.applications:,} applications and their labels)\n")
    print("| flow | batch | decisions/s (labels included) | vs usual stack |")
    print("|---|---|---|---|")
    print(f"| usual stack: river HoeffdingAdaptiveTreeClassifier, predict_one + learn_one per application, no fairness "
          f"| 1 | {usual:,.0f} | 1.0x |")
    for batch_size in (256, 4096):
        for label, make in (("fair_decision, λ = 0", decider(0.0)), ("fair_decision, λ = 1", decider(1.0)),
                            ("fair_decision (λ = 1) + fairness_monitor", decider(1.0, with_monitor=True))):
            rate = operator_rate(make, events, batch_size)
            print(f"| {label} | {batch_size:,} | {rate:,.0f} | {rate / usual:.1f}x |")
    kernels = kernel_rates(args.kernel_rows)
    print(f"\nPer labelled instance, the learning kernels alone (6 inputs, T = 3, h = 4, λ = 1): Aranyani's "
          f"aggregate-based step {kernels['aranyani']:,.0f}/s, the reservoir baseline (100 samples per group, penalty "
          f"recomputed each step) {kernels['reservoir']:,.0f}/s: {kernels['aranyani'] / kernels['reservoir']:.0f}x.")
    print("\nNo GPU rows: the learner is a sequential compiled CPU loop (one Adam step per label); see the module "
          "docstring.")


if __name__ == "__main__":
    main()
