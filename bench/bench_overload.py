"""Overload and backpressure: Vigil tailing a topic fed at several times its capacity, then catching up.

Starts the embedded Tansu broker and a 4-partition topic, and ``vigil run`` in tail mode with one heavy operator
(``--operator``, ``knn_rshash`` on three numeric fields by default) so that one Python producer can outrun it on a
small machine. The producer (confluent-kafka, ``linger.ms`` 10) sends JSON events keyed by entity at a fixed rate:
``--warmup-rate`` for ``--warmup`` seconds (below capacity: state and librdkafka's buffers reach their steady size),
then ``--rate`` for ``--overload`` seconds, then nothing until Vigil has caught up (``--catchup`` seconds at most).

Every second it samples Vigil's resident memory (VmRSS of the process and its children, from /proc), the consumer
lag from Vigil's own metrics endpoint (``vigil_consumer_lag_messages`` summed over partitions, the largest
``vigil_consumer_lag_seconds``), the records Vigil has read (``vigil_events_total``) and the records produced.

What it shows: resident memory stays bounded during overload (the source does not read ahead without limit: the
growth after warm-up is compared with the backlog's bytes), the lag grows about linearly while the producer outruns
Vigil, and drops back to 0 once the producer stops. Extra librdkafka consumer properties (``--consumer KEY=VALUE``)
go to the run's ``[kafka] consumer`` table, e.g. ``queued.max.messages.kbytes`` to bound the prefetch further.

    .venv/bin/python bench/bench_overload.py --out bench/results/overload.md
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FIELDS = ("cpu", "latency_ms", "requests")
PARTITIONS = 4
MIB = 1024 * 1024
SAMPLE = re.compile(r"^(vigil_consumer_lag_messages|vigil_consumer_lag_seconds|vigil_events_total)(\{[^}]*\})? (\S+)$")


def process_tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (VmRSS from /proc; 0 for a process that is gone)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:  # gone
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match.group(1)) * 1024 if match else 0
        for task in tasks:
            try:
                pending.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:  # a thread that ended meanwhile
                pass
    return total


def scrape(port: int) -> dict[str, float] | None:
    """Summed lag (messages), largest lag (seconds) and records read, from Vigil's Prometheus endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    lag_messages = lag_seconds = read = 0.0
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match:
            continue
        value = float(match.group(3))
        if match.group(1) == "vigil_consumer_lag_messages":
            lag_messages += value
        elif match.group(1) == "vigil_consumer_lag_seconds":
            lag_seconds = max(lag_seconds, value)
        else:
            read += value
    return {"lag_messages": lag_messages, "lag_seconds": lag_seconds, "read": read}


def run_config(path: Path, bootstrap: str, topic: str, operator: str, consumer: dict[str, object], port: int) -> Path:
    """Vigil tailing ``topic`` from its beginning with one ``operator`` on the three fields, alerts to a file in the
    temporary directory, metrics on ``port``."""
    extra = ", ".join(f"{json.dumps(key)} = {json.dumps(value)}" for key, value in {"fetch.wait.max.ms": 20, **consumer}.items())
    path.write_text(f"""
[run]
run_dir = "{path.parent / 'run'}"
[source]
type = "kafka"
topics = ["{topic}"]
mode = "tail"
start = "beginning"
[kafka]
bootstrap_servers = ["{bootstrap}"]
commit_offsets = false
consumer = {{ {extra} }}
[pipeline]
batch_max_wait_ms = 50
[metrics]
enabled = true
port = {port}
[[operators]]
name = "heavy"
type = "{operator}"
fields = {json.dumps(list(FIELDS))}
[sinks.alerts]
type = "file"
path = "alerts.jsonl"
[sinks.dead_letters]
type = "none"
""")
    return path


@dataclass
class PacedProducer:
    """JSON events keyed by entity at ``rate`` events per second (changeable while running; 0 pauses it), stamped
    with the wall clock; ``sent`` counts the records delivered to the broker's client queue."""

    bootstrap: str
    topic: str
    entities: int = 50
    seed: int = 0
    rate: float = 0.0
    sent: int = 0
    bytes_sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 10, "batch.num.messages": 10_000,
                             "queue.buffering.max.messages": 1_000_000})
        rng = np.random.default_rng(self.seed)
        values = rng.normal([50.0, 120.0, 300.0], [5.0, 10.0, 30.0], size=(65_536, 3)).round(3).tolist()
        bodies = [f'"fields":{{"cpu":{c},"latency_ms":{lat},"requests":{r}}}}}' for c, lat, r in values]
        keys = [f"node-{i:04d}" for i in range(self.entities)]
        index, credit, last = 0, 0.0, time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            credit = min(credit + (now - last) * self.rate, max(self.rate * 0.05, 1.0))  # no burst after a pause
            last = now
            due = int(credit)
            if due == 0:
                producer.poll(0.002)
                continue
            ts = int(time.time() * 1000)
            for _ in range(due):
                key = keys[index % self.entities]
                payload = f'{{"key":"{key}","ts":{ts},{bodies[index & 65535]}'.encode()
                while True:
                    try:
                        producer.produce(self.topic, payload, key.encode())
                        break
                    except BufferError:
                        producer.poll(0.01)
                index += 1
                self.bytes_sent += len(payload)
            credit -= due
            self.sent += due
            producer.poll(0)
        producer.flush(30)


def measure(*, operator: str = "knn_rshash", rate: float = 60_000, warmup_rate: float = 2_000, warmup: float = 10.0,
            overload: float = 60.0, catchup: float = 300.0, consumer: dict[str, object] | None = None,
            entities: int = 50, echo=None) -> dict:
    """Runs the three phases and returns every one-second sample and a summary (see the module's docstring)."""
    from pipeline.config import KafkaConfig
    from pipeline.demo.broker import EmbeddedBroker, free_port
    from pipeline.engine.kafka import KafkaSettings, create_topics

    samples: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        topic = "overload"
        create_topics(KafkaSettings(KafkaConfig(bootstrap_servers=[broker.bootstrap])), {topic: PARTITIONS})
        port = free_port()
        config = run_config(Path(tmp) / "vigil.toml", broker.bootstrap, topic, operator, consumer or {}, port)
        log = open(Path(tmp) / "vigil.log", "wb")
        vigil = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)], cwd=REPO,
                                 stdout=log, stderr=subprocess.STDOUT)
        producer = PacedProducer(broker.bootstrap, topic, entities=entities)
        feeder = threading.Thread(target=producer.run, daemon=True)
        try:
            deadline = time.monotonic() + 60
            while scrape(port) is None:
                if vigil.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"vigil did not start:\n{(Path(tmp) / 'vigil.log').read_text()[-3000:]}")
                time.sleep(0.2)
            feeder.start()
            started = time.monotonic()
            phases = [("warm-up", warmup, warmup_rate), ("overload", overload, rate), ("catch-up", catchup, 0.0)]
            for phase, seconds, phase_rate in phases:
                producer.rate = phase_rate
                phase_start = time.monotonic()
                tick = phase_start
                while time.monotonic() - phase_start < seconds:
                    tick += 1.0
                    time.sleep(max(0.0, tick - time.monotonic()))
                    if vigil.poll() is not None:
                        raise RuntimeError(f"vigil exited:\n{(Path(tmp) / 'vigil.log').read_text()[-3000:]}")
                    metrics = scrape(port) or {"lag_messages": float("nan"), "lag_seconds": float("nan"), "read": float("nan")}
                    sample = {"t": round(time.monotonic() - started, 1), "phase": phase, "produced": producer.sent,
                              "rss_mib": process_tree_rss(vigil.pid) / MIB, **metrics}
                    samples.append(sample)
                    if echo:
                        echo(sample)
                    if phase == "catch-up" and caught_up(sample):
                        break
            producer.stop.set()
            feeder.join(30)
        finally:
            producer.stop.set()
            vigil.terminate()
            try:
                vigil.wait(20)
            except subprocess.TimeoutExpired:
                vigil.kill()
                vigil.wait()
            log.close()
    return {"config": {"operator": operator, "rate": rate, "warmup_rate": warmup_rate, "warmup": warmup,
                       "overload": overload, "catchup": catchup, "consumer": consumer or {}, "entities": entities,
                       "partitions": PARTITIONS},
            "samples": samples, "summary": summarize(samples, producer.bytes_sent / max(producer.sent, 1))}


def caught_up(sample: dict) -> bool:
    """Everything produced has been read and every partition's lag gauge is 0."""
    return sample["read"] >= sample["produced"] and sample["lag_messages"] == 0


def rate_between(samples: list[dict], key: str) -> float:
    """Per-second rate of ``key`` from the first to the last of ``samples``."""
    if len(samples) < 2 or samples[-1]["t"] == samples[0]["t"]:
        return 0.0
    return (samples[-1][key] - samples[0][key]) / (samples[-1]["t"] - samples[0]["t"])


def summarize(samples: list[dict], payload_bytes: float) -> dict:
    """The figures the report is about: memory after warm-up and during overload, the lag's growth and the catch-up."""
    warm = [s for s in samples if s["phase"] == "warm-up"]
    over = [s for s in samples if s["phase"] == "overload"]
    after = [s for s in samples if s["phase"] == "catch-up"]
    half = over[len(over) // 2:]
    lag_end = over[-1]["lag_messages"] if over else 0.0
    done = next((s for s in after if caught_up(s)), None)
    return {
        "rss_after_warmup_mib": warm[-1]["rss_mib"] if warm else None,
        "rss_max_overload_mib": max(s["rss_mib"] for s in over) if over else None,
        "rss_end_overload_mib": over[-1]["rss_mib"] if over else None,
        "rss_growth_mib": (max(s["rss_mib"] for s in over) - warm[-1]["rss_mib"]) if over and warm else None,
        # memory growth over the second half of the overload: ~0 when the read-ahead is bounded
        "rss_growth_second_half_mib": (max(s["rss_mib"] for s in half) - half[0]["rss_mib"]) if half else None,
        "rss_max_mib": max(s["rss_mib"] for s in samples) if samples else None,
        "produce_rate": rate_between(over, "produced"),
        "read_rate_overload": rate_between(over, "read"),
        "lag_growth_per_s": rate_between(over, "lag_messages"),
        "lag_growth_second_half_per_s": rate_between(half, "lag_messages"),
        "lag_end_overload_messages": lag_end,
        # what the gauge should read: librdkafka's high watermark (the gauge's reference) only moves with fetches
        "backlog_end_overload_messages": (over[-1]["produced"] - over[-1]["read"]) if over else 0,
        "lag_end_overload_seconds": over[-1]["lag_seconds"] if over else 0.0,
        "backlog_mib": (over[-1]["produced"] - over[-1]["read"]) * payload_bytes / MIB if over else 0.0,
        "payload_bytes": payload_bytes,
        "read_rate_catchup": rate_between(after, "read"),
        "catchup_seconds": (done["t"] - over[-1]["t"]) if done and over else None,
    }


def markdown(result: dict, every: int = 1) -> str:
    c, s = result["config"], result["summary"]
    consumer = ", ".join(f"`{k}` = {v}" for k, v in c["consumer"].items()) or "defaults"
    lines = [
        "# Overload and backpressure (bench/bench_overload.py)",
        "",
        f"`vigil run` (tail) with one `{c['operator']}` operator on {len(FIELDS)} fields, {c['partitions']} partitions, "
        f"{c['entities']} entities; producer {c['warmup_rate']:,.0f} events/s for {c['warmup']:.0f} s (warm-up), then "
        f"{c['rate']:,.0f} events/s for {c['overload']:.0f} s (overload), then stopped. librdkafka consumer: "
        f"`fetch.wait.max.ms` = 20, {consumer}.",
        "",
        "| t (s) | phase | produced | read by Vigil | lag (messages) | lag (s) | RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    samples = result["samples"]
    for i, x in enumerate(samples):
        if i % every == 0 or i == len(samples) - 1 or (i + 1 < len(samples) and samples[i + 1]["phase"] != x["phase"]):
            lines.append(f"| {x['t']:.0f} | {x['phase']} | {x['produced']:,} | {x['read']:,.0f} | {x['lag_messages']:,.0f} "
                         f"| {x['lag_seconds']:.1f} | {x['rss_mib']:.0f} |")
    catchup = f"{s['catchup_seconds']:.0f} s" if s["catchup_seconds"] is not None else "not within the catch-up limit"
    ratio = s["produce_rate"] / s["read_rate_overload"] if s["read_rate_overload"] else float("inf")
    lines += [
        "",
        "## Summary",
        "",
        f"- Producer {s['produce_rate']:,.0f} events/s against Vigil's {s['read_rate_overload']:,.0f} read/s during the "
        f"overload ({ratio:.1f}x its capacity); {s['read_rate_catchup']:,.0f} read/s while catching up (producer stopped).",
        f"- Lag grew {s['lag_growth_per_s']:,.0f} messages/s over the overload ({s['lag_growth_second_half_per_s']:,.0f} "
        f"over its second half) to {s['lag_end_overload_messages']:,.0f} messages, {s['lag_end_overload_seconds']:.0f} s "
        f"behind (produced minus read: {s['backlog_end_overload_messages']:,.0f}): a backlog of {s['backlog_mib']:,.0f} MiB "
        f"of payloads ({s['payload_bytes']:.0f} bytes each).",
        f"- RSS {s['rss_after_warmup_mib']:.0f} MiB after warm-up, at most {s['rss_max_overload_mib']:.0f} MiB during the "
        f"overload (+{s['rss_growth_mib']:.0f} MiB; +{s['rss_growth_second_half_mib']:.0f} MiB over its second half), "
        f"{s['rss_max_mib']:.0f} MiB at most over the run.",
        f"- Caught up (everything produced read, lag 0 on every partition) {catchup} after the producer stopped.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operator", default="knn_rshash", help="the one (heavy) operator Vigil runs")
    parser.add_argument("--rate", type=float, default=80_000, help="events/s during the overload")
    parser.add_argument("--warmup-rate", type=float, default=2_000, help="events/s during the warm-up")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of warm-up")
    parser.add_argument("--overload", type=float, default=60.0, help="seconds of overload")
    parser.add_argument("--catchup", type=float, default=600.0, help="seconds at most to wait for Vigil to catch up")
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--consumer", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra librdkafka consumer property (integers as integers), repeatable")
    parser.add_argument("--every", type=int, default=5, help="one table row per this many samples")
    parser.add_argument("--out", type=Path, help="write the Markdown here (else stdout)")
    parser.add_argument("--json", type=Path, help="also write every sample and the summary as JSON")
    args = parser.parse_args()
    consumer = {}
    for item in args.consumer:
        key, _, value = item.partition("=")
        consumer[key] = int(value) if value.lstrip("-").isdigit() else value
    result = measure(operator=args.operator, rate=args.rate, warmup_rate=args.warmup_rate, warmup=args.warmup,
                     overload=args.overload, catchup=args.catchup, consumer=consumer, entities=args.entities,
                     echo=lambda x: print(json.dumps(x), file=sys.stderr, flush=True))
    text = markdown(result, args.every)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
