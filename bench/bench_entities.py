"""Resident memory under an unbounded key space: 1,000,000 events with 1,000,000 distinct keys.

Every event has a key never seen before (a request id used as the entity key by mistake), so without a
bound on entity state memory would grow with the stream. The bench writes the events to a JSON-lines
file (untimed) and runs the real ``vigil run`` with the default operators (zscore outlier scoring and
ADWIN drift on its score) in a subprocess for each configured cap ``entities.max_per_shard``, sampling
the process's resident memory (``VmRSS`` from /proc) every 0.2 s. It also runs a reference with few
distinct keys (each cap's worth, so nothing is evicted) and reports, per cap (the TTL is off, so the cap alone
bounds the state; a cap above the key count shows the growth it prevents): peak RSS, live entities and
evictions at the end (from metrics.prom), throughput, and the peak RSS of the reference.

Usage: ``python bench/bench_entities.py [--events N] [--caps 500,2000,8000] [--out bench/results/entities.md]``.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
SHARDS = 16
START_MS = 1_767_225_600_000


def write_events(path: Path, events: int, distinct: int, seed: int = 0) -> None:
    """Demo-shaped events (cpu, latency_ms, requests, error_rate); key i % distinct, one per second."""
    rng = np.random.default_rng(seed)
    with path.open("w") as out:
        for start in range(0, events, 100_000):
            n = min(100_000, events - start)
            values = rng.normal([50.0, 120.0, 300.0, 0.01], [5.0, 10.0, 30.0, 0.002], size=(n, 4))
            out.writelines(
                f'{{"key":"req-{(start + i) % distinct}","ts":{START_MS + (start + i) * 1000},"fields":'
                f'{{"cpu":{v[0]:.3f},"latency_ms":{v[1]:.3f},"requests":{v[2]:.3f},"error_rate":{v[3]:.5f}}}}}\n'
                for i, v in enumerate(values.tolist()))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run(events: Path, run_dir: Path, cap: int) -> dict:
    """One bounded `vigil run`; peak RSS sampled from outside, end-of-run metrics from metrics.prom."""
    command = [sys.executable, "-m", "pipeline.cli", "run", "--config", str(REPO / "pipeline" / "default.toml"),
               "--set", "source.type='file'", "--set", f"source.path='{events}'", "--set", f"entities.max_per_shard={cap}",
               "--set", f"pipeline.shards={SHARDS}", "--set", "entities.ttl_seconds=0",  # the cap alone bounds the state
               "--run-dir", str(run_dir), "--no-metrics"]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while process.poll() is None:
            try:
                peak = max(peak, rss_bytes(process.pid))
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = process.communicate()
    sampler.join()
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"vigil run failed ({process.returncode}): {stderr.decode()[-2000:]}")
    samples = {}
    for family in text_string_to_metric_families((run_dir / "metrics.prom").read_text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return {
        "cap_per_shard": cap,
        "peak_rss_mib": round(peak / 2**20, 1),
        "live_entities": int(samples[("vigil_entities", ())]),
        "evicted_capacity": int(samples[("vigil_entities_evicted_total", (("reason", "capacity"),))]),
        "evicted_ttl": int(samples[("vigil_entities_evicted_total", (("reason", "ttl"),))]),
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events, each with a new key (default 1000000)")
    parser.add_argument("--caps", default="500,2000,8000", help="entities.max_per_shard values to run (default 500,2000,8000)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    caps = [int(cap) for cap in args.caps.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        unbounded = tmp_path / "distinct.jsonl"
        write_events(unbounded, args.events, distinct=args.events)
        for cap in caps:
            result = run(unbounded, tmp_path / f"distinct-{cap}", cap)
            # Reference: as many distinct keys as the cap allows over all shards (crc32 spreads them unevenly,
            # so take 80 %): nothing is evicted, every entity stays.
            few = tmp_path / f"few-{cap}.jsonl"
            write_events(few, args.events, distinct=int(0.8 * cap * SHARDS))
            reference = run(few, tmp_path / f"few-{cap}", cap)
            result["reference_distinct_keys"] = int(0.8 * cap * SHARDS)
            result["reference_peak_rss_mib"] = reference["peak_rss_mib"]
            result["reference_evicted"] = reference["evicted_capacity"] + reference["evicted_ttl"]
            rows.append(result)
            print(json.dumps(result), flush=True)
    lines = [
        f"# Resident memory with {args.events:,} events, every one a new key",
        "",
        f"`python bench/bench_entities.py --events {args.events} --caps {args.caps}`; default operators (zscore + ADWIN), "
        f"{SHARDS} shards, one process, TTL off; {platform.machine()}, Python {platform.python_version()}.",
        "",
        "| max_per_shard | entity cap (x16 shards) | peak RSS, 1M distinct keys | live entities at end | evicted (capacity) "
        "| run time | reference: 0.8 x cap distinct keys, no eviction: peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['cap_per_shard']:,} | {r['cap_per_shard'] * SHARDS:,} | {r['peak_rss_mib']} MiB | "
                     f"{r['live_entities']:,} | {r['evicted_capacity']:,} | {r['seconds']} s | "
                     f"{r['reference_peak_rss_mib']} MiB ({r['reference_distinct_keys']:,} keys) |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
