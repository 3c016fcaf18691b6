"""The benchmark suite: Vigil against the usual Python stack, measured in the same run on a real broker.

It starts the embedded Tansu broker, produces a seeded event set (``--events`` JSON events of ``--entities``
entities with three numeric fields, keyed by entity, into a 4-partition topic) and measures:

* the decode-and-count ceiling and the usual stack (:mod:`bench.flows`: Bytewax's Kafka source, ``json.loads``,
  a count per key / river ``MinMaxScaler | HalfSpaceTrees`` per key), each in its own process;
* Vigil's default pipeline (the ``baseline`` outlier operator and the trend-CUSUM drift on the three fields), Kafka
  to an alerts topic, bounded, in one process; the same events as flat JSON objects read through a declared ``[source.schema]``;
  the same with two processes (``-i``/``-a``), with partition-local shards
  (``pipeline.shard_by = "partition"``) and with shards by key; and ``vigil replay --from beginning``;
* event-to-output latency (p50, p99) at a steady input rate: Vigil tails the topic with every event's scores
  going to a topic, the producer stamps each event with the wall clock, and a consumer notes when its output
  arrives;
* decode throughput of the same events in Vigil's own format and as flat JSON through the schema decoder;
* resident memory and snapshot time of the default operators' state for 10,000 and 100,000 entities;
* kernel micro-benchmarks (robust EWMA, calibrated alerting, the trend CUSUM, ADWIN, Page-Hinkley, the MSS-APRE autoencoder's
  scoring) on the CPU and,
  when torch sees one, on CUDA.

Every throughput is an events-per-second figure with start-up included (the wall time of the process) and its
ratio to the usual stack's in the same run; the processing-only figure (after start-up) is given next to it.
Writes ``suite.json`` and ``suite.md`` into ``--out``. ``--small`` runs every part on a few thousand events,
to keep the suite working in CI (its figures are not meant to judge speed).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np

from bench.bench_entities import rss_bytes
from operators.event import parse_ts_ms

REPO = Path(__file__).resolve().parent.parent
FIELDS = ("cpu", "latency_ms", "requests")
PARTITIONS = 4
START_MS = 1_767_225_600_000


# The bench's events in Vigil's own format and as flat JSON objects, read through a declared schema.
SHAPES = {
    "vigil": '{{"key":"{key}","ts":{ts},"fields":{{"cpu":{cpu},"latency_ms":{latency},"requests":{requests}}}}}',
    "flat": '{{"host":"{key}","ts":{ts},"cpu":{cpu},"latency_ms":{latency},"requests":{requests}}}',
}
FLAT_SCHEMA = '[source.schema]\npreset = "flat"\nkey = ["host"]\ntime = "ts"\ntime_unit = "ms"\n'


def payloads(events: int, entities: int, shape: str = "vigil", seed: int = 0) -> Iterator[tuple[str, str]]:
    """Seeded (key, JSON event) pairs, one second of event time apart per entity."""
    rng = np.random.default_rng(seed)
    template = SHAPES[shape]
    for start in range(0, events, 100_000):
        n = min(100_000, events - start)
        values = rng.normal([50.0, 120.0, 300.0], [5.0, 10.0, 30.0], size=(n, 3)).round(3).tolist()
        for i, (cpu, latency, requests) in enumerate(values):
            index = start + i
            key = f"node-{index % entities:04d}"
            yield key, template.format(key=key, ts=START_MS + index * 1000 // entities, cpu=cpu, latency=latency,
                                       requests=requests)


def produce(bootstrap: str, topic: str, events: int, entities: int, shape: str = "vigil") -> None:
    """The seeded events of :func:`payloads`, keyed by entity."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 2_000_000})
    for key, payload in payloads(events, entities, shape):
        while True:
            try:
                producer.produce(topic, payload.encode(), key.encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()


def vigil_config(path: Path, bootstrap: str, topic: str, *, mode: str = "bounded", alerts_topic: str = "",
                 batch_max_wait_ms: int = 50, schema: str = "") -> Path:
    """Vigil's default operators over ``topic``, alerts to a topic (or, without one, to alerts.jsonl)."""
    alerts = f'type = "kafka"\ntopic = "{alerts_topic}"' if alerts_topic else 'type = "file"\npath = "alerts.jsonl"'
    path.write_text(f"""
[source]
type = "kafka"
topics = ["{topic}"]
mode = "{mode}"
start = "beginning"
{schema}
[kafka]
bootstrap_servers = ["{bootstrap}"]
commit_offsets = false
consumer = {{ "fetch.wait.max.ms" = 20 }}
[pipeline]
batch_max_wait_ms = {batch_max_wait_ms}
[[operators]]
name = "outlier"
type = "baseline"
fields = {json.dumps(list(FIELDS))}
[[operators]]
name = "drift"
type = "drift"
fields = {json.dumps(list(FIELDS))}
[operators.params]
detector = "trend_cusum"
[sinks.alerts]
{alerts}
[sinks.dead_letters]
type = "none"
""")
    return path


def timed_process(command: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return seconds, result.stdout + result.stderr


def reference_flow(kind: str, bootstrap: str, topic: str) -> dict:
    _, output = timed_process([sys.executable, "-m", "bench.flows", kind, "--brokers", bootstrap, "--topic", topic])
    return json.loads(output.strip().splitlines()[-1])


RUN_FINISHED = re.compile(r"run (?:finished|stopped) after ([0-9.]+) s")
READ_LINE = re.compile(r"read (\d+) offsets in ([0-9.]+) s")


def vigil_run(config: Path, run_dir: Path, *extra: str) -> dict:
    seconds, output = timed_process([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config),
                                     "--run-dir", str(run_dir), "--no-metrics", *extra])
    match = RUN_FINISHED.search(output)
    return {"seconds": seconds, "flow_seconds": float(match.group(1)) if match else None}


def vigil_replay(config: Path, run_dir: Path, alerts_topic: str) -> dict:
    seconds, output = timed_process([sys.executable, "-m", "pipeline.cli", "replay", "--config", str(config),
                                     "--from", "beginning", "--alerts-topic", alerts_topic, "--run-dir", str(run_dir),
                                     "--no-metrics", "--no-progress"])
    match = READ_LINE.search(output)
    return {"seconds": seconds, "flow_seconds": float(match.group(2)) if match else None}


def timed_cluster(config: Path, run_dir: Path, processes: int, shard_by: str) -> tuple[float, list[float]]:
    """Wall seconds of a bounded run of ``processes`` Vigil processes (one cluster), and each process's CPU seconds."""
    from pipeline.demo.broker import free_port

    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    cluster = (lambda i: ["-i", str(i), "-a", addresses]) if processes > 1 else (lambda i: [])
    run_dir.mkdir(parents=True, exist_ok=True)
    logs = [run_dir / f"stderr-{i}.log" for i in range(processes)]
    started = time.perf_counter()
    children = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config), "--run-dir",
                                  str(run_dir), "--no-metrics", "--set", f"pipeline.shard_by={shard_by}", *cluster(i)],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "wb")) for i, log in enumerate(logs)]
    cpu = []
    for child, log in zip(children, logs):
        _, status, usage = os.wait4(child.pid, 0)
        if status:
            raise RuntimeError(f"a Vigil process exited with status {status}: {log.read_text()[-2000:]}")
        cpu.append(round(usage.ru_utime + usage.ru_stime, 2))
    return time.perf_counter() - started, cpu


def latency(bootstrap: str, run: Path, rate: float, seconds: float, entities: int) -> dict:
    """p50 and p99 of (when an alert is written) - (the wall-clock time the producer stamped into its event).

    Vigil tails the topic with its default operators and writes alerts to a JSON-lines file, which this process
    reads as it grows. One event in ``SPIKE_EVERY`` is a spike far outside its entity's range, so alerts arrive
    steadily (the rest is normal input, at the same rate)."""
    from confluent_kafka import Producer

    from pipeline.config import KafkaConfig
    from pipeline.engine.kafka import KafkaSettings, create_topics

    topic = f"bench-live-{rate:.0f}"
    create_topics(KafkaSettings(KafkaConfig(bootstrap_servers=[bootstrap])), {topic: PARTITIONS})
    config = vigil_config(run / f"{topic}.toml", bootstrap, topic, mode="tail")
    out = run / topic
    vigil = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config), "--run-dir",
                              str(out), "--no-metrics"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    delays: list[float] = []
    done = threading.Event()

    def collect() -> None:
        while not (out / "alerts.jsonl").exists() and not done.is_set():
            time.sleep(0.01)
        with open(out / "alerts.jsonl", "rb") as alerts:
            pending = b""
            while not done.is_set():
                chunk = alerts.read()
                arrived = time.time() * 1000
                if not chunk:
                    time.sleep(0.002)
                    continue
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if lines:
                    delays.extend((now, arrived - ts) for now in [arrived] for ts in _event_times(lines))

    collector = threading.Thread(target=collect)
    collector.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    time.sleep(8.0)  # Vigil starts (imports, plan, broker connection) before the clock of the test starts
    warmup, started, sent = 3.0, time.perf_counter(), 0  # entities warm up and calibrate: alerts only after that
    total = int(rate * (seconds + warmup))
    while sent < total:
        due = int((time.perf_counter() - started) * rate)
        for _ in range(min(due - sent, 5000)):
            now = int(time.time() * 1000)
            key = f"node-{sent % entities:04d}"
            cpu = 5000 if sent % SPIKE_EVERY == SPIKE_EVERY - 1 else 50 + sent % 7
            payload = f'{{"key":"{key}","ts":{now},"fields":{{"cpu":{cpu},"latency_ms":120,"requests":300}}}}'
            try:
                producer.produce(topic, payload.encode(), key.encode(), timestamp=now)
            except BufferError:  # the broker is behind: try again on the next round
                producer.poll(0.01)
                break
            sent += 1
        producer.poll(0)
        time.sleep(0.001)
    producer.flush()
    time.sleep(2.0)
    done.set()
    collector.join()
    vigil.terminate()
    vigil.wait(timeout=60)
    steady = started + warmup - time.perf_counter() + time.time()  # the wall clock when the warm-up ended
    measured = np.array([delay for arrived, delay in delays if arrived >= steady * 1000])
    return {"rate": rate, "seconds": seconds, "alerts": len(measured),
            "p50_ms": round(float(np.percentile(measured, 50)), 1) if len(measured) else None,
            "p99_ms": round(float(np.percentile(measured, 99)), 1) if len(measured) else None}


SPIKE_EVERY = 4001  # prime, so spikes visit every entity, each rarely enough to stay out of its calibration window


class _Scored(msgspec.Struct):
    ts: str


def _event_times(lines: list[bytes]) -> list[int]:
    return [parse_ts_ms(record.ts) for record in msgspec.json.Decoder(list[_Scored]).decode(b"[" + b",".join(lines) + b"]")]


def state_memory(entities: int) -> dict:
    """The default operators' state for ``entities`` warm entities, in this process: resident memory added and the
    time to snapshot it (the chain's plain data, pickled as Bytewax's recovery store does)."""
    from operators.batch import Batch
    from operators.drift import DriftParams
    from operators.baseline import BaselineParams
    from operators.registry import OperatorChain, OperatorSpec

    chain = OperatorChain.build([OperatorSpec("baseline", "outlier", FIELDS, BaselineParams()),
                                 OperatorSpec("drift", "drift", FIELDS, DriftParams())],
                                max_entities=entities)
    rng = np.random.default_rng(1)
    before = rss_bytes(os.getpid())
    rounds = 250  # past the operators' warm-ups (at most 200, the calibration's): every state is allocated
    keys = np.array([f"entity-{i}" for i in range(entities)], dtype=object)
    for r in range(rounds):
        for start in range(0, entities, 4096):
            part = slice(start, min(start + 4096, entities))
            n = part.stop - part.start
            values = rng.normal(50.0, 5.0, size=(n, 3))
            batch = Batch(keys[part], np.zeros(n, dtype=np.int64), np.full(n, START_MS + r * 60_000, dtype=np.int64),
                          np.full(n, "t", dtype=object), np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64),
                          numeric={name: values[:, j] for j, name in enumerate(FIELDS)})
            chain.run(batch)
    added = rss_bytes(os.getpid()) - before
    started = time.perf_counter()
    blob = pickle.dumps(chain.snapshot(), protocol=pickle.HIGHEST_PROTOCOL)
    snapshot_seconds = time.perf_counter() - started
    return {"entities": entities, "rss_added_mib": round(added / 2**20, 1), "snapshot_seconds": round(snapshot_seconds, 2),
            "snapshot_mib": round(len(blob) / 2**20, 1), "state_bytes_mib": round(chain.state_bytes() / 2**20, 1)}


def kernels(devices: list[str], rows: int = 4096, repeats: int = 20) -> list[dict]:
    """Events per second of the batched kernels at ``rows`` events per call."""
    from kernels.adwin import AdwinBank
    from kernels.ewma import RobustEwma
    from kernels.page_hinkley import PageHinkleyBank
    from kernels.trend_cusum import TrendCusumBank
    from operators.alerting import AlertingParams, CalibratedAlerting

    rng = np.random.default_rng(2)
    results = []
    slots = np.arange(rows) % 1000
    values = rng.normal(size=(rows, 4))
    ewma, alerting, adwin, page_hinkley = RobustEwma(4), CalibratedAlerting(AlertingParams()), AdwinBank(), PageHinkleyBank()
    trend_cusum = TrendCusumBank()
    for name, call in (("robust_ewma", lambda: ewma.score_and_learn(slots, values)),
                       ("calibrated_alerting", lambda: alerting.judge(slots, np.arange(rows) * 1000, values[:, 0])),
                       ("trend_cusum", lambda: trend_cusum.update(slots, values[:, 0])),
                       ("adwin", lambda: adwin.update(slots, values[:, 0])),
                       ("page_hinkley", lambda: page_hinkley.update(slots, values[:, 0]))):
        for _ in range(60):  # past the warm-ups: every slot has 245 scores, so each one is judged
            call()
        started = time.perf_counter()
        for _ in range(repeats):
            call()
        results.append({"kernel": name, "device": "cpu", "events_per_s": round(rows * repeats / (time.perf_counter() - started))})
    for device in devices:
        results.append({"kernel": "apre_mss_scoring", "device": device,
                        "events_per_s": _autoencoder_rate(device, rows, repeats)})
    return results


def _autoencoder_rate(device: str, rows: int, repeats: int) -> int:
    """MSS-APRE scoring (autoencoder forward and inductive mean shift against 2,048 reference rows)."""
    import torch

    from kernels.autoencoder import AutoEncoder
    from kernels.mean_shift import shift_queries, shift_reference

    model = AutoEncoder(8, probabilistic=True).to(device).eval()
    steps = shift_reference(torch.randn(2048, 8, device=device), 32, 0)
    x = torch.randn(rows, 8, device=device)

    def score() -> None:
        with torch.no_grad():
            model(x)
            shift_queries(x, [*steps, None], 32)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    score()
    started = time.perf_counter()
    for _ in range(repeats):
        score()
    return round(rows * repeats / (time.perf_counter() - started))


def decoding(events: int = 100_000, batch: int = 1000, repeats: int = 3) -> list[dict]:
    """Decode throughput of the bench's events in Vigil's own format (its fixed decoder) and as flat JSON through a
    declared schema, in batches of ``batch`` records as a Kafka read hands them over; the best of ``repeats``."""
    from pipeline.config import SchemaConfig
    from pipeline.engine.decode import RecordBatch
    from pipeline.engine.schema import compile_schema

    schemas = {"vigil": SchemaConfig(), "flat": SchemaConfig(preset="flat", key=["host"], time="ts", time_unit="ms")}
    rows = []
    for shape, schema in schemas.items():
        decoder = compile_schema(schema, list(FIELDS), [])
        encoded = [payload.encode() for _, payload in payloads(events, 50, shape)]
        batches = [RecordBatch("bench", 0, np.arange(start, start + batch), encoded[start:start + batch])
                   for start in range(0, events, batch)]
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            decoded = sum(len(decoder.decode_batch(records, 65536).batch) for records in batches)
            best = min(best, time.perf_counter() - started)
        assert decoded == events, (shape, decoded)
        rows.append({"shape": shape, "events_per_s": round(events / best)})
    rows[1]["vs_vigil_format"] = round(rows[1]["events_per_s"] / rows[0]["events_per_s"], 3)
    return rows


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def markdown(result: dict) -> str:
    usual = result["usual_stack"]["events_per_s"]
    lines = [f"# Vigil benchmark suite ({result['events']:,} events, {result['entities']} entities)", "",
             f"`{result['command']}`; {result['machine']}", "",
             "| flow | events/s (start-up included) | vs usual stack | events/s after start-up |", "|---|---|---|---|"]
    for name in ("ceiling", "usual_stack", "vigil", "vigil_flat_json", "vigil_replay", "vigil_two_processes",
                 "vigil_two_processes_key_shards"):
        row = result.get(name)
        if row:
            flow = f"{row['flow_events_per_s']:,}" if row.get("flow_events_per_s") else ""
            lines.append(f"| {name} | {row['events_per_s']:,} | {row['events_per_s'] / usual:.1f}x | {flow} |")
    lines += ["", "Two processes vs one: " + ", ".join(
        f"{result[name]['vs_one_process']}x with shard_by = \"{shard_by}\""
        for name, shard_by in (("vigil_two_processes", "partition"), ("vigil_two_processes_key_shards", "key"))
        if name in result) + "."]
    if result.get("latency"):
        lat = result["latency"]
        lines += ["", f"Event-to-alert latency at {lat['rate']:,.0f} events/s for {lat['seconds']:.0f} s "
                      f"({lat['alerts']:,} alerts): p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms."]
    if result.get("state"):
        lines += ["", "| entities | resident memory added | state | snapshot (pickled) | snapshot time |",
                  "|---|---|---|---|---|"]
        lines += [f"| {s['entities']:,} | {s['rss_added_mib']} MiB | {s['state_bytes_mib']} MiB | {s['snapshot_mib']} MiB | "
                  f"{s['snapshot_seconds']} s |" for s in result["state"]]
    if result.get("decoding"):
        lines += ["", "| decoding (1,000 records a batch) | events/s | vs Vigil's format |", "|---|---|---|"]
        lines += [f"| {d['shape']} | {d['events_per_s']:,} | {d.get('vs_vigil_format', 1.0)} |" for d in result["decoding"]]
    lines += ["", "| kernel | device | events/s (4,096 per call) |", "|---|---|---|"]
    lines += [f"| {k['kernel']} | {k['device']} | {k['events_per_s']:,} |" for k in result["kernels"]]
    if not result["machine"].get("gpu"):
        lines += ["", "No GPU was available: no CUDA figures."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the topic (default 1000000)")
    parser.add_argument("--entities", type=int, default=50, help="distinct entity keys (default 50)")
    parser.add_argument("--rate", type=float, default=20_000, help="steady input rate of the latency test (default 20000/s)")
    parser.add_argument("--small", action="store_true", help="a quick pass over every part, for CI")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where suite.json and suite.md go")
    args = parser.parse_args()
    if args.small:
        args.events, args.rate = 5_000, 5_000  # 5,000/s: entities calibrate within the latency warm-up
    from pipeline.config import KafkaConfig
    from pipeline.demo.broker import EmbeddedBroker
    from pipeline.engine.kafka import KafkaSettings, create_topics

    result: dict = {"events": args.events, "entities": args.entities, "machine": machine(),
                    "command": "python -m bench " + " ".join(sys.argv[1:])}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        run = Path(tmp)
        bootstrap = broker.bootstrap
        create_topics(KafkaSettings(KafkaConfig(bootstrap_servers=[bootstrap])),
                      {"bench-events": PARTITIONS, "bench-events-flat": PARTITIONS, "bench-alerts": 1,
                       "bench-flat-alerts": 1, "bench-replay-alerts": 1,
                       "bench-vigil_two_processes-alerts": 1, "bench-vigil_two_processes_key_shards-alerts": 1})
        produce(bootstrap, "bench-events", args.events, args.entities)
        produce(bootstrap, "bench-events-flat", args.events, args.entities, shape="flat")
        for name, kind in (("ceiling", "ceiling"), ("usual_stack", "usual")):
            measured = reference_flow(kind, bootstrap, "bench-events")
            result[name] = {"events_per_s": round(measured["events"] / measured["seconds"]),
                            "flow_events_per_s": round(measured["events"] / measured["flow_seconds"]),
                            "events": measured["events"]}
            print(name, result[name], flush=True)
        config = vigil_config(run / "vigil.toml", bootstrap, "bench-events", alerts_topic="bench-alerts")
        flat = vigil_config(run / "flat.toml", bootstrap, "bench-events-flat", alerts_topic="bench-flat-alerts",
                            schema=FLAT_SCHEMA)
        for name, measure in (("vigil", lambda: vigil_run(config, run / "vigil")),
                              ("vigil_flat_json", lambda: vigil_run(flat, run / "flat")),
                              ("vigil_replay", lambda: vigil_replay(config, run / "replay", "bench-replay-alerts"))):
            measured = measure()
            flow = measured["flow_seconds"]
            result[name] = {"events_per_s": round(args.events / measured["seconds"]),
                            "flow_events_per_s": round(args.events / flow) if flow else None}
            print(name, result[name], flush=True)
        for name, shard_by in (("vigil_two_processes", "partition"), ("vigil_two_processes_key_shards", "key")):
            cluster = vigil_config(run / f"{name}.toml", bootstrap, "bench-events", alerts_topic=f"bench-{name}-alerts")
            seconds, _ = timed_cluster(cluster, run / name, 2, shard_by)
            rate = round(args.events / seconds)
            result[name] = {"events_per_s": rate, "vs_one_process": round(rate / result["vigil"]["events_per_s"], 2)}
            print(name, result[name], flush=True)
        result["latency"] = latency(bootstrap, run, args.rate, 5.0 if args.small else 30.0, args.entities)
        print("latency", result["latency"], flush=True)
    result["decoding"] = decoding(10_000 if args.small else 200_000)
    print("decoding", result["decoding"], flush=True)
    result["state"] = [state_memory(n) for n in ((1_000,) if args.small else (10_000, 30_000))]
    print("state", result["state"], flush=True)
    import torch

    result["kernels"] = kernels(["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
    args.out.mkdir(parents=True, exist_ok=True)
    name = "suite-small" if args.small else "suite"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
