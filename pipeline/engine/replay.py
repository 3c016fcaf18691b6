"""``vigil replay``: the configured operators over a bounded slice of historical topics.

A replay never touches the live run: it writes into its own run directory (``alerts.jsonl``,
``dead_letters.jsonl``, optionally ``scores.jsonl``, ``plan.json``, ``summary.json``) or, for alerts,
into a separate topic; it keeps its own recovery store (``state/`` in its run directory, emptied when a
replay starts) and commits no consumer-group offsets. Results depend on event time only: alerts carry
event times, files are written in source order without repeats, and ``summary.json`` holds counts, not
durations, so two replays of the same slice give byte-identical files.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import msgspec

from operators.event import parse_ts_ms
from pipeline.config import Config, ConfigError, ConfigIssue, SinkConfig, SourceConfig
from pipeline.engine.kafka import KafkaSettings, PartitionPlan, plan_slice
from pipeline.engine.metrics import Metrics
from pipeline.engine.progress import Progress
from pipeline.engine.runner import kafka_source, run_pipeline

_OFFSETS = re.compile(r"^\d+:\d+(,\d+:\d+)*$")


@dataclass(frozen=True)
class SliceSpec:
    """``--from`` and ``--to`` parsed: a start time or per-partition offsets, and an end time."""

    from_ts: int | None = None
    from_offsets: dict[int, int] | None = None
    to_ts: int | None = None

    @classmethod
    def parse(cls, start: str, end: str) -> SliceSpec:
        """
        >>> SliceSpec.parse("beginning", "end")
        SliceSpec(from_ts=None, from_offsets=None, to_ts=None)
        >>> SliceSpec.parse("0:100,3:7", "2026-01-02T00:00:00Z")
        SliceSpec(from_ts=None, from_offsets={0: 100, 3: 7}, to_ts=1767312000000)
        """
        issues = []
        spec = cls()
        if _OFFSETS.match(start):
            pairs = (item.split(":") for item in start.split(","))
            spec = dataclasses.replace(spec, from_offsets={int(p): int(o) for p, o in pairs})
        elif start != "beginning":
            try:
                spec = dataclasses.replace(spec, from_ts=parse_ts_ms(start))
            except ValueError:
                issues.append(ConfigIssue("--from", f"{start!r} is not beginning, a time or PARTITION:OFFSET,...",
                                          "e.g. 2026-01-01T00:00:00Z or 0:1200,1:1180"))
        if end != "end":
            try:
                spec = dataclasses.replace(spec, to_ts=parse_ts_ms(end))
            except ValueError:
                issues.append(ConfigIssue("--to", f"{end!r} is not end or a time", "e.g. 2026-01-02T00:00:00Z"))
        if spec.from_ts is not None and spec.to_ts is not None and spec.to_ts <= spec.from_ts:
            issues.append(ConfigIssue("--to", "must be later than --from"))
        if issues:
            raise ConfigError(issues, "replay")
        return spec


def replay_config(config: Config, topics: list[str], run_dir: str, alerts_topic: str | None, scores: bool) -> Config:
    """The live config turned into a replay's: own outputs, own state, no offset commits."""
    issues = []
    live_dirs = {Path(config.run.run_dir).resolve()}
    if config.recovery.directory:
        live_dirs.add(Path(config.recovery.directory).resolve())
    if Path(run_dir).resolve() in live_dirs:
        issues.append(ConfigIssue("--run-dir", f"{run_dir} belongs to the live run", "give the replay its own directory"))
    live_topics = {getattr(config.sinks, name).topic for name in ("alerts", "dead_letters", "scores")} | set(topics)
    if alerts_topic and alerts_topic in live_topics:
        issues.append(ConfigIssue("--alerts-topic", f"{alerts_topic!r} is a live or source topic", "use a separate topic"))
    if issues:
        raise ConfigError(issues, "replay")
    file_sink = lambda name: SinkConfig(type="file", path=f"{name}.jsonl")  # noqa: E731
    return dataclasses.replace(
        config,
        run=dataclasses.replace(config.run, run_dir=run_dir),
        source=SourceConfig(type="kafka", topics=list(topics), mode="bounded"),
        sinks=dataclasses.replace(
            config.sinks,
            alerts=SinkConfig(type="kafka", topic=alerts_topic) if alerts_topic else file_sink("alerts"),
            dead_letters=file_sink("dead_letters"),
            scores=file_sink("scores") if scores else SinkConfig(type="none"),
        ),
        kafka=dataclasses.replace(config.kafka, commit_offsets=False),
        recovery=dataclasses.replace(config.recovery, directory=str(Path(run_dir) / "state")),
    )


def _plan(config: Config, spec: SliceSpec, run_dir: Path) -> list[PartitionPlan]:
    """Plan the slice (saved as ``plan.json``) after clearing what an earlier replay left in ``run_dir``."""
    for stale in ("state", "alerts.jsonl", "dead_letters.jsonl", "scores.jsonl", "summary.json"):
        path = run_dir / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    plans = plan_slice(KafkaSettings(config.kafka), config.source.topics, from_ts=spec.from_ts,
                       from_offsets=spec.from_offsets, to_ts=spec.to_ts)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "plan.json").write_bytes(msgspec.json.format(msgspec.json.encode(plans)) + b"\n")
    return plans


def run_replay(config: Config, spec: SliceSpec, *, show_progress: bool = True, out: TextIO | None = None) -> dict:
    """Run a replay of ``config`` (already a :func:`replay_config`) and print its summary."""
    run_dir = Path(config.run.run_dir)
    plans = _plan(config, spec, run_dir)
    total = sum(plan.size for plan in plans)
    metrics = Metrics(replay=True)
    progress = Progress(total, label="offsets", enabled=show_progress)
    read = 0

    def on_advance(offsets: int) -> None:
        nonlocal read
        read += offsets
        progress.advance(offsets)
        metrics.replay_progress.set(min(1.0, read / total) if total else 1.0)

    metrics.replay_progress.set(0.0 if total else 1.0)
    report = run_pipeline(config, lambda m: kafka_source(config, plans, m, on_advance), bounded=True, metrics=metrics)
    progress.close()
    summary = _summary(plans, report.metrics, report.alerts_path, complete=not report.stopped)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    rate = read / report.elapsed_seconds if report.elapsed_seconds else 0.0
    print(format_summary(summary) + f"\n  read {read} offsets in {report.elapsed_seconds:.1f} s ({rate:,.0f}/s)", file=out)
    return summary


class _AlertCounts(msgspec.Struct):
    operator: str
    severity: str


def _summary(plans: list[PartitionPlan], metrics: Metrics, alerts_path: Path | None, complete: bool) -> dict:
    sample = lambda name, **labels: int(metrics.registry.get_sample_value(name, labels) or 0)  # noqa: E731
    valid, invalid = sample("vigil_events_total", outcome="valid"), sample("vigil_events_total", outcome="invalid")
    alerts: dict[str, Counter] = {}
    if alerts_path is not None:
        decoder = msgspec.json.Decoder(_AlertCounts)
        for line in alerts_path.read_bytes().splitlines() if alerts_path.exists() else []:
            alert = decoder.decode(line)
            alerts.setdefault(alert.operator, Counter())[alert.severity] += 1
    else:  # alerts went to a topic
        for metric in metrics.alerts.collect():
            for s in metric.samples:
                if s.name == "vigil_alerts_total" and s.value:
                    alerts.setdefault(s.labels["operator"], Counter())[s.labels["severity"]] += int(s.value)
    slice_offsets = sum(plan.size for plan in plans)
    return {
        "complete": complete,
        "partitions": [msgspec.to_builtins(plan) for plan in plans],
        "slice_offsets": slice_offsets,
        "records_in_window": valid + invalid,
        "valid_events": valid,
        "invalid_events": invalid,
        "alerts": {op: dict(sorted(counts.items())) for op, counts in sorted(alerts.items())},
    }


def format_summary(s: dict) -> str:
    state = "complete" if s["complete"] else "stopped early"
    lines = [
        f"Vigil replay summary ({state})",
        f"  partitions        {len(s['partitions']):>9}",
        f"  offsets in slice  {s['slice_offsets']:>9}",
        f"  records in window {s['records_in_window']:>9}   (valid {s['valid_events']}, dead-lettered {s['invalid_events']})",
    ]
    for operator, counts in s["alerts"].items():
        detail = ", ".join(f"{severity} {n}" for severity, n in counts.items())
        lines.append(f"  alerts {operator:<10} {sum(counts.values()):>9}   ({detail})")
    if not s["alerts"]:
        lines.append(f"  alerts            {0:>9}")
    return "\n".join(lines)
