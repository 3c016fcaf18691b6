"""One process against two, repeated: how much a second Vigil process adds on this machine, and how much it varies.

The suite (``python -m bench``) measures each flow once. Two processes on a two-core machine that also runs the
broker are sensitive to what else the machine does, so this script alternates the two measurements ``--repeats``
times on one topic (the suite's: 1,000,000 events of 50 entities in 4 partitions, keyed by entity) and prints each
pair's ratio, their median and each process's CPU time::

    .venv/bin/python bench/bench_scaling.py --repeats 5 > bench/results/scaling.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import PARTITIONS, produce, timed_cluster, vigil_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shard-by", default="partition", choices=("partition", "key"))
    args = parser.parse_args()
    from pipeline.config import KafkaConfig
    from pipeline.demo.broker import EmbeddedBroker
    from pipeline.engine.kafka import KafkaSettings, create_topics

    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        run = Path(tmp)
        alerts = [f"scaling-alerts-{i}" for i in range(2 * args.repeats)]
        create_topics(KafkaSettings(KafkaConfig(bootstrap_servers=[broker.bootstrap])),
                      {"scaling-events": PARTITIONS, **{topic: 1 for topic in alerts}})
        produce(broker.bootstrap, "scaling-events", args.events, args.entities)
        for repeat in range(args.repeats):
            one, one_cpu = timed_cluster(vigil_config(run / f"one-{repeat}.toml", broker.bootstrap, "scaling-events",
                                                      alerts_topic=alerts[2 * repeat]), run / f"one-{repeat}", 1,
                                         args.shard_by)
            two, two_cpu = timed_cluster(vigil_config(run / f"two-{repeat}.toml", broker.bootstrap, "scaling-events",
                                                      alerts_topic=alerts[2 * repeat + 1]), run / f"two-{repeat}", 2,
                                         args.shard_by)
            ratios.append(one / two)
            rows.append(f"| {repeat + 1} | {args.events / one:,.0f} | {one_cpu[0]} | {args.events / two:,.0f} | "
                        f"{' + '.join(map(str, two_cpu))} | {one / two:.2f}x |")
    print(f"# One process against two (`shard_by = \"{args.shard_by}\"`), {args.events:,} events, {args.repeats} pairs\n")
    print(f"`python bench/bench_scaling.py --repeats {args.repeats} --shard-by {args.shard_by}`\n")
    print("| pair | one process, events/s | CPU s | two processes, events/s | CPU s | two vs one |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nMedian {statistics.median(ratios):.2f}x, range {min(ratios):.2f}x to {max(ratios):.2f}x.")


if __name__ == "__main__":
    main()
