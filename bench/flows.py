"""The reference flows of the benchmark suite, written the way a user writes them with Bytewax and river.

* ``ceiling``: Bytewax's Kafka source, ``json.loads`` per event, a count per key: the decode-and-count ceiling
  of the usual stack.
* ``usual``: the same plus, per key, river's ``MinMaxScaler() | HalfSpaceTrees()`` (river's defaults), scoring each
  event and then learning it.

Both read the topic from the beginning to its end (``tail=False``) in one worker. Usage:
``python -m bench.flows ceiling|usual --brokers HOST:PORT --topic T``; prints one JSON line with the events
processed and the seconds from the first line of this module (start-up included) and from the flow's start.
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 - the clock starts before the imports, as a user's process would
import json  # noqa: E402

import bytewax.operators as op  # noqa: E402
from bytewax.connectors.kafka import KafkaSource  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.outputs import DynamicSink, StatelessSinkPartition  # noqa: E402
from bytewax.testing import run_main  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING  # noqa: E402


class _Count(StatelessSinkPartition):
    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def write_batch(self, items: list) -> None:
        self.seen[0] += len(items)


class CountingSink(DynamicSink):
    """Discards its items and counts them (one worker)."""

    def __init__(self) -> None:
        self.seen = [0]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count(self.seen)


def build(kind: str, brokers: str, topic: str, sink: CountingSink) -> Dataflow:
    flow = Dataflow(kind)
    messages = op.input("kafka", flow, KafkaSource([brokers], [topic], tail=False, starting_offset=OFFSET_BEGINNING))
    events = op.map("decode", messages, lambda message: json.loads(message.value))
    keyed = op.key_on("key", events, lambda event: event["key"])
    if kind == "ceiling":
        def count(seen, event):
            seen = (seen or 0) + 1
            return seen, seen

        out = op.stateful_map("count", keyed, count)
    else:
        from river import anomaly, preprocessing

        def score(model, event):
            if model is None:
                model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees()
            x = event["fields"]
            value = model.score_one(x)
            model.learn_one(x)
            return model, value

        out = op.stateful_map("score", keyed, score)
    op.output("out", out, sink)
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description="a reference flow of the benchmark suite")
    parser.add_argument("kind", choices=["ceiling", "usual"])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()
    sink = CountingSink()
    flow = build(args.kind, args.brokers, args.topic, sink)
    flow_started = time.perf_counter()
    run_main(flow)
    done = time.perf_counter()
    print(json.dumps({"events": sink.seen[0], "seconds": done - STARTED, "flow_seconds": done - flow_started}))


if __name__ == "__main__":
    main()
