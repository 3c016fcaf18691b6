"""The counts that end a run, shared by ``vigil run`` and ``vigil demo`` (which adds its ground truth): events,
dead letters by reason, alerts by operator and severity."""
from __future__ import annotations

from collections import Counter

from pipeline.config import Config
from pipeline.engine.decode import REASONS
from pipeline.engine.runner import RunReport

SEVERITIES = ("info", "warning", "critical")
DEAD_LETTER_REASONS = (*REASONS, "operator_error")  # decoding's reasons, then the operators' failures


def summarize(report: RunReport, alerts: Counter[tuple[str, str]] | None = None) -> dict:
    """The counts of this process's run, from its metrics; ``alerts`` by (operator, severity) when the caller reads
    them back from the alert file (default: the metrics' count, which covers alerts sent anywhere)."""
    registry = report.metrics.registry
    count = lambda name, **labels: int(registry.get_sample_value(name, labels) or 0)  # noqa: E731
    if alerts is None:
        alerts = Counter({(s.labels["operator"], s.labels["severity"]): int(s.value) for metric in
                          report.metrics.alerts.collect() for s in metric.samples
                          if s.name == "vigil_alerts_total" and s.value})
    by_operator: dict[str, dict[str, int]] = {}
    for (operator, severity), n in sorted(alerts.items()):
        by_operator.setdefault(operator, {})[severity] = n
    valid, invalid = count("vigil_events_total", outcome="valid"), count("vigil_events_total", outcome="invalid")
    return {
        "run_dir": str(report.run_dir),
        "elapsed_seconds": round(report.elapsed_seconds, 3),
        "events": valid + invalid,
        "valid_events": valid,
        "invalid_events": invalid,
        "invalid_by_reason": {r: n for r in DEAD_LETTER_REASONS if (n := count("vigil_events_invalid_total", reason=r))},
        "alerts": by_operator,
    }


def format_counts(s: dict) -> list[str]:
    """The lines of :func:`summarize`'s counts; with ``injected_malformed`` and ``precision`` (the demo's ground
    truth) in ``s``, the injected count and a precision column too."""
    rate = s["events"] / s["elapsed_seconds"] if s["elapsed_seconds"] else 0.0
    injected = f"injected {s['injected_malformed']}; " if "injected_malformed" in s else ""
    precision = s.get("precision")
    lines = [
        f"  events        {s['events']:>9}   ({s['elapsed_seconds']:.1f} s, {rate:,.0f} events/s)",
        f"  valid         {s['valid_events']:>9}",
        f"  invalid       {s['invalid_events']:>9}   ({injected}dead-lettered by reason: "
        + (", ".join(f"{r} {n}" for r, n in s["invalid_by_reason"].items()) or "none") + ")",
        "",
        f"  {'alerts':<28}" + "".join(f"{sev:>10}" for sev in SEVERITIES) + f"{'total':>10}"
        + (f"{'precision':>11}" if precision is not None else ""),
    ]
    for op, counts in s["alerts"].items():
        shown = "" if precision is None else f"{precision[op]:>11.3f}" if op in precision else f"{'-':>11}"
        lines.append(f"  {op:<28}" + "".join(f"{counts.get(sev, 0):>10}" for sev in SEVERITIES)
                     + f"{sum(counts.values()):>10}" + shown)
    return lines


def dead_letters_at(config: Config, report: RunReport) -> str:
    """Where this run's dead letters went ("are in ...", "went to ..."), for messages that send the reader there."""
    sink = config.sinks.dead_letters
    if report.dead_letters_path is not None:
        return f"are in {report.dead_letters_path}"
    if sink.type == "kafka":
        return f"are in topic {sink.topic!r}"
    return "went to stdout" if sink.type == "stdout" else "were not kept (sinks.dead_letters.type = 'none')"
