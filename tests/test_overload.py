"""Overload and backpressure, the short version of bench/bench_overload.py: Vigil tailing a topic fed at several
times its capacity keeps its resident memory bounded, shows the growing lag in its metrics, and catches up once the
producer stops.

Vigil runs one ``knn_rshash`` operator (about 24,000 events/s here), so that a Python producer at 80,000 events/s
outruns it (3x). The run bounds librdkafka's read-ahead per partition through the ``[kafka] consumer`` table
(``queued.min.messages`` = 10,000, ``queued.max.messages.kbytes`` = 8,192, ``fetch.max.bytes`` = 1 MiB; Vigil runs one
consumer per partition), as the README's Kafka section suggests for memory-tight deployments. With librdkafka's
defaults the read-ahead is bounded too, but its plateau (about 260 MiB with 4 partitions in bench/results/overload.md)
is above what a 10 s overload reaches, so the short test could not tell a bound from a leak.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.timeout(200)
# The catch-up ends as soon as the lag is 0; its limit leaves room for a loaded machine reading at half speed.
CATCHUP_LIMIT_SECONDS = 80

# Resident memory may grow this much from the end of the warm-up to the end of the overload: the bounded read-ahead
# (4 partitions x 10,000 messages, with librdkafka's per-message overhead, and a 1 MiB fetch each) and the operator's
# batches. Reading the backlog ahead (about 550,000 messages, 55 MiB of payloads, over 150 MiB of librdkafka's queues
# with its defaults) would exceed it.
RSS_GROWTH_MIB = 64


def test_overload_keeps_memory_bounded_shows_lag_and_catches_up(tmp_path):
    out = tmp_path / "overload.json"
    subprocess.run([sys.executable, "bench/bench_overload.py", "--rate", "80000", "--warmup-rate", "2000",
                    "--warmup", "4", "--overload", "10", "--catchup", str(CATCHUP_LIMIT_SECONDS), "--json", str(out), "--out",
                    str(tmp_path / "overload.md"), "--consumer", "queued.min.messages=10000",
                    "--consumer", "queued.max.messages.kbytes=8192", "--consumer", "fetch.max.bytes=1048576"],
                   cwd=REPO, check=True, capture_output=True, timeout=180)
    result = json.loads(out.read_text())
    s, samples = result["summary"], result["samples"]
    over = [x for x in samples if x["phase"] == "overload"]

    # a real overload: the producer kept its rate and outran Vigil at least twice over
    assert s["produce_rate"] > 2 * s["read_rate_overload"] > 0, s
    # the lag grows in the metrics while overloaded: over 100,000 messages and 3 s behind at the end. The seconds
    # gauge (age of the last record read) rises steadily; the messages gauge moves in steps, as librdkafka learns the
    # partition's end only from fetches, so compare the thirds' largest values
    assert s["lag_end_overload_messages"] > 100_000, s
    assert s["lag_end_overload_seconds"] > 3.0, s
    third = len(over) // 3
    for gauge, step in (("lag_messages", 50_000), ("lag_seconds", 1.0)):
        first, last = max(x[gauge] for x in over[:third]), max(x[gauge] for x in over[-third:])
        assert last > first + step, (gauge, over)
    # memory stays bounded while the backlog grows
    assert s["rss_growth_mib"] < RSS_GROWTH_MIB, s
    # once the producer stops, Vigil reads everything and every partition's lag returns to 0
    assert s["catchup_seconds"] is not None and s["catchup_seconds"] < CATCHUP_LIMIT_SECONDS, s
    assert samples[-1]["lag_messages"] == 0 and samples[-1]["lag_seconds"] == 0.0, samples[-1]
