"""``vigil demo``: the synthetic stream through the live dataflow, then a summary against ground truth.

Writes into the run directory: ``alerts.jsonl``, ``dead_letters.jsonl``, ``truth.jsonl`` (injected
incidents), ``metrics.prom`` (final metrics) and ``summary.json`` (the table below, as data).
"""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TextIO

import msgspec

from operators.event import epoch_ms
from pipeline.config import Config
from pipeline.decode import REASONS
from pipeline.progress import Progress
from pipeline.runner import RunReport, run_pipeline
from pipeline.sources import DemoSource
from pipeline.synthetic import KINDS, Evaluation, SyntheticStream, evaluate

SEVERITIES = ("info", "warning", "critical")


class _AlertView(msgspec.Struct):
    key: str
    ts: datetime
    operator: str
    severity: str


def read_alerts(path: Path | None) -> list[_AlertView]:
    if path is None or not path.exists():
        return []
    decoder = msgspec.json.Decoder(_AlertView)
    return [decoder.decode(line) for line in path.read_bytes().splitlines() if line]


def run_demo(config: Config, *, show_progress: bool = True, out: TextIO | None = None) -> dict:
    demo = config.demo
    stream = SyntheticStream(
        events=demo.events,
        entities=demo.entities,
        seed=demo.seed,
        bad_rate=demo.bad_rate,
        start=demo.start,
        interval_seconds=demo.interval_seconds,
        max_event_bytes=config.pipeline.max_event_bytes,
    )
    run_dir = Path(config.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "truth.jsonl", "wb") as truth:
        for incident in stream.incidents:
            truth.write(msgspec.json.encode(incident) + b"\n")

    progress = Progress(demo.events, enabled=show_progress)
    source = DemoSource(stream, rate=demo.rate, on_emit=progress.advance)
    report = run_pipeline(config, source, bounded=True)
    progress.close()

    alerts = read_alerts(report.alerts_path)
    evaluation = evaluate(stream.incidents, [(a.key, epoch_ms(a.ts), a.operator) for a in alerts])
    summary = _summary(config, report, alerts, evaluation, len(stream.corrupt_at))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(format_summary(summary), file=out)
    return summary


def _summary(config: Config, report: RunReport, alerts: list[_AlertView], evaluation: Evaluation, injected_bad: int) -> dict:
    registry = report.metrics.registry
    count = lambda name, **labels: int(registry.get_sample_value(name, labels) or 0)  # noqa: E731
    by_operator: dict[str, Counter] = {}
    for alert in alerts:
        by_operator.setdefault(alert.operator, Counter())[alert.severity] += 1
    valid, invalid = count("vigil_events_total", outcome="valid"), count("vigil_events_total", outcome="invalid")
    return {
        "seed": config.demo.seed,
        "run_dir": str(report.run_dir),
        "elapsed_seconds": round(report.elapsed_seconds, 3),
        "events": valid + invalid,
        "valid_events": valid,
        "invalid_events": invalid,
        "injected_malformed": injected_bad,
        "invalid_by_reason": {r: n for r in REASONS if (n := count("vigil_events_invalid_total", reason=r))},
        "alerts": {op: dict(sorted(c.items())) for op, c in sorted(by_operator.items())},
        "precision": {op: evaluation.precision(op) for op in sorted(by_operator)} | {"all": evaluation.precision()},
        "incidents": evaluation.incidents,
        "detected": evaluation.detected,
        "recall": {kind: evaluation.recall((kind,)) for kind in KINDS}
        | {"spike+level_shift": evaluation.recall(("spike", "level_shift")), "all": evaluation.recall()},
    }


def format_summary(s: dict) -> str:
    rate = s["events"] / s["elapsed_seconds"] if s["elapsed_seconds"] else 0.0
    lines = [
        f"Vigil demo summary (seed {s['seed']}, run dir {s['run_dir']})",
        f"  events        {s['events']:>9}   ({s['elapsed_seconds']:.1f} s, {rate:,.0f} events/s)",
        f"  valid         {s['valid_events']:>9}",
        f"  invalid       {s['invalid_events']:>9}   (injected {s['injected_malformed']}; dead-lettered by reason: "
        + (", ".join(f"{r} {n}" for r, n in s["invalid_by_reason"].items()) or "none") + ")",
        "",
        f"  {'alerts':<12}" + "".join(f"{sev:>10}" for sev in SEVERITIES) + f"{'total':>10}{'precision':>11}",
    ]
    for op, counts in s["alerts"].items():
        lines.append(
            f"  {op:<12}" + "".join(f"{counts.get(sev, 0):>10}" for sev in SEVERITIES)
            + f"{sum(counts.values()):>10}{s['precision'][op]:>11.3f}"
        )
    lines += ["", f"  {'ground truth':<20}{'injected':>10}{'detected':>10}{'recall':>9}"]
    for kind in KINDS:
        lines.append(f"  {kind:<20}{s['incidents'][kind]:>10}{s['detected'][kind]:>10}{s['recall'][kind]:>9.3f}")
    lines += [
        "",
        f"  recall on spikes and level shifts: {s['recall']['spike+level_shift']:.3f}   "
        f"precision of all alerts: {s['precision']['all']:.3f}",
    ]
    return "\n".join(lines)
