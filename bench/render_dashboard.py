"""Render the core panels of the Pipeline health and Detection dashboards from a real Prometheus that scraped a real
run, for the README (no Grafana server runs here).

A tailing ``vigil run`` on the embedded broker (bench/monitoring.py) reads a synthetic fleet with incidents for
``--seconds``, stamped with wall-clock event times, with a burst of malformed records at two thirds of the way;
Prometheus scrapes it every 2 s with the repository's scrape config and rules. Each panel of the picture runs the
dashboard's own query over the run (``query_range``), drawn with matplotlib. The dashboards' rates are over 5
minutes, so a run of at least 6 minutes shows them settled.

    .venv/bin/python -m bench.render_dashboard            # writes docs/images/dashboard.png
"""
from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.monitoring import REPO, monitored_run, panel_queries  # noqa: E402
from operators.event import format_ts  # noqa: E402
from pipeline.demo.synthetic import SyntheticStream  # noqa: E402

# The panels drawn, by the recording rule their query uses, in this order (a 3 x 3 grid).
CORE = ("vigil:events:rate5m", "vigil:events_invalid:rate5m", "vigil:alerts:rate5m", "vigil:consumer_lag_seconds:max",
        "vigil:event_lag_seconds:p99_5m", "vigil:batch_size:mean_5m", "vigil:kernel_seconds:p99_5m",
        "vigil:drift:rate5m", "vigil:score:p99_5m")
STEP = 2.0


def fleet(seconds: float, rate: float, entities: int = 100, seed: int = 7, round_seconds: float = 20.0):
    """``rate`` events a second for ``seconds`` from ``entities`` services, stamped from the moment each round of
    ``round_seconds`` is generated (so event times stay with the wall clock); every round has the same seed, so the
    services keep their baselines, as in docker/demo_producer.py."""
    for _ in range(math.ceil(seconds / round_seconds)):
        synthetic = SyntheticStream(events=int(round_seconds * rate), entities=entities, seed=seed, bad_rate=0.002,
                                    start=format_ts(int(time.time() * 1000)), interval_seconds=entities / rate,
                                    max_event_bytes=65536)
        yield from ((r.key.encode(), r.payload, r.ts_ms) for r in synthetic.payloads())


def core_panels() -> list[tuple[str, str]]:
    """(title, query) of the first panel of the Pipeline health, then the Detection dashboard using each core
    recording rule."""
    chosen = {}
    queries = panel_queries()
    for uid in ("vigil-pipeline", "vigil-detection"):
        for title, expr in ((title, expr) for panel_uid, title, expr in queries if panel_uid == uid):
            rule = next((rule for rule in CORE if rule in expr), None)
            if rule is None or rule in chosen:
                continue
            chosen[rule] = (title, expr)
    return [chosen[rule] for rule in CORE if rule in chosen]


def legend(metric: dict[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(metric.items()) if name not in {"__name__", "job"}) or "all"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=420.0)
    parser.add_argument("--rate", type=float, default=3000.0, help="events per second written")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "dashboard.png")
    args = parser.parse_args()
    panels = core_panels()
    with tempfile.TemporaryDirectory() as scratch, monitored_run(Path(scratch), interval=f"{STEP:.0f}s") as run:
        started = time.time()
        writer = threading.Thread(target=run.produce, args=(fleet(args.seconds, args.rate), args.rate))
        writer.start()
        time.sleep(args.seconds * 2 / 3)
        now_ms = int(time.time() * 1000)
        run.produce(((b"svc-%d" % i, b"\x00not json", now_ms + i) for i in range(int(args.rate * 5))), args.rate)
        writer.join()
        time.sleep(4 * STEP)
        end = time.time()
        series = [(title, run.prometheus.query_range(expr, started, end, STEP)) for title, expr in panels]

    figure, axes = plt.subplots(3, 3, figsize=(15, 9.5), sharex=True)
    for axis, (title, results) in zip(axes.flat, series):
        for result in sorted(results, key=lambda r: legend(r["metric"]))[:6]:
            times = [float(t) - started for t, _ in result["values"]]
            axis.plot(times, [float(v) for _, v in result["values"]], label=legend(result["metric"]), linewidth=1.2)
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        if results:
            axis.legend(fontsize=7, loc="upper left")
    for axis in axes[-1]:
        axis.set_xlabel("seconds into the run")
    figure.suptitle(f"Vigil dashboards' core panels: a real Prometheus scraping a real run ({args.seconds:.0f} s, "
                    f"{args.rate:.0f} events/s, a malformed burst at {args.seconds * 2 / 3:.0f} s)", fontsize=11)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=90)
    print(f"wrote {args.out} ({len(series)} panels)")


if __name__ == "__main__":
    main()
