"""Runs a configured dataflow: metrics endpoint up, sources and sinks built, Bytewax executed.

Bounded runs (a file, the demo) end by rewriting their outputs in source order, so equal inputs give
byte-identical files, and by saving the final metrics as ``metrics.prom`` in the run directory.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bytewax.inputs import Source
from bytewax.run import cli_main

from pipeline.config import Config
from pipeline.dataflow import Batching, build_flow
from pipeline.metrics import Metrics
from pipeline.sinks import build_sink, sort_by_source
from pipeline.sources import JsonLinesSource, RawRecord

log = logging.getLogger("vigil")


@dataclass
class RunReport:
    run_dir: Path
    alerts_path: Path | None
    dead_letters_path: Path | None
    elapsed_seconds: float
    metrics: Metrics


def configured_source(config: Config) -> Source[RawRecord]:
    if config.source.type == "file":
        return JsonLinesSource([config.source.path])
    raise ValueError(f"source type {config.source.type!r} is run by its own command (vigil demo)")


def run_pipeline(config: Config, source: Source[RawRecord], *, bounded: bool, workers: int = 1) -> RunReport:
    run_dir = Path(config.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sinks = config.sinks
    outputs = {}
    for name in ("alerts", "dead_letters"):
        sink = getattr(sinks, name)
        path = config.sink_path(sink) if sink.type == "file" else None
        if bounded and path is not None and path.exists():
            path.unlink()  # a bounded run's outputs describe that run only
        outputs[name] = (build_sink(sink.type, path), path)

    metrics = Metrics()
    metrics.attach_kernels()
    server = None
    if config.metrics.enabled:
        server = metrics.serve(config.metrics.host, config.metrics.port)
        log.info("metrics on http://%s:%d/metrics", config.metrics.host, server.server_port)

    flow = build_flow(
        source=source,
        operator_specs=config.operator_specs(),
        alert_sink=outputs["alerts"][0],
        dead_letter_sink=outputs["dead_letters"][0],
        metrics=metrics,
        shards=config.pipeline.shards,
        batching=Batching(config.pipeline.batch_max_size, timedelta(milliseconds=config.pipeline.batch_max_wait_ms)),
        max_event_bytes=config.pipeline.max_event_bytes,
    )
    started = time.monotonic()
    try:
        cli_main(flow, workers_per_process=workers)
    finally:
        metrics.detach_kernels()
        if server is not None:
            server.shutdown()
            server.server_close()
    elapsed = time.monotonic() - started
    if bounded:
        for _sink, path in outputs.values():
            if path is not None:
                sort_by_source(path)
    (run_dir / "metrics.prom").write_bytes(metrics.exposition())
    return RunReport(run_dir, outputs["alerts"][1], outputs["dead_letters"][1], elapsed, metrics)
