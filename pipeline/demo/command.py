"""``vigil demo``: the synthetic stream through the live dataflow, then a summary against ground truth.

Writes into the run directory: ``alerts.jsonl``, ``dead_letters.jsonl``, ``scores.jsonl`` (every event's
scores and p-values, unless ``[sinks.scores]`` says otherwise), ``truth.jsonl`` (injected incidents),
``metrics.prom`` (final metrics) and ``summary.json`` (the table below, as data). The summary scores
detection against the ground truth, and severity alignment (Kendall tau-b, C-index between each
incident's grade and each outlier operator's calibrated p-value; :mod:`pipeline.evaluation.severity`).

With ``--broker embedded`` the stream goes through Kafka: a Tansu broker starts on a free loopback
port, a producer thread writes the stream into a 4-partition topic (keyed by entity, stamped with event
time), and the live consumer tails it with alerts and dead letters going to their own topics, until
it has read every event and stops as it would on SIGTERM. The two output files are then read back
from those topics.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import threading
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TextIO

import msgspec
import numpy as np

from operators.batch import P_VALUE_SUFFIX
from operators.event import SourcePosition, epoch_ms
from pipeline.config import Config, SinkConfig, SourceConfig
from pipeline.demo.applicants import DESK, GROUPS, REGIONS
from pipeline.demo.broker import EmbeddedBroker
from pipeline.demo.source import stream_records
from pipeline.demo.synthetic import KINDS, Evaluation, SyntheticStream, evaluate, evaluate_beats
from pipeline.engine.decode import DeadLetter
from pipeline.engine.kafka import KafkaSettings, create_topics, read_topic
from pipeline.engine.progress import Progress
from pipeline.engine.runner import RunReport, configured_source, run_pipeline
from pipeline.engine.shutdown import STOP
from pipeline.engine.sinks import sort_by_source
from pipeline.engine.sources import IteratorSource, Pacer
from pipeline.engine.summary import format_counts, summarize
from pipeline.evaluation.severity import alignment, severity_labels

INCIDENT_KINDS = ("outlier", "drift")  # the alert kinds the injected incidents are scored against


class _ScoresView(msgspec.Struct):
    key: str
    ts: datetime
    scores: dict[str, float | None]
    id: str | None = None


class _AlertView(msgspec.Struct):
    key: str
    ts: datetime
    operator: str
    kind: str
    severity: str


class _IncidentView(msgspec.Struct):
    key: str
    operator: str
    kind: str
    state: str
    opened: datetime


def read_alerts(path: Path | None) -> list[_AlertView]:
    if path is None or not path.exists():
        return []
    decoder = msgspec.json.Decoder(_AlertView)
    return [decoder.decode(line) for line in path.read_bytes().splitlines() if line]


DEMO_TOPIC = "vigil-demo"  # the topic name in the positions of the directly fed stream (without a broker)
DEMO_TOPICS = {"events": "vigil-demo-events", "alerts": "vigil-demo-alerts", "dead_letters": "vigil-demo-dead-letters",
               "scores": "vigil-demo-scores"}
DEMO_PARTITIONS = 4


def run_demo(config: Config, *, show_progress: bool = True, out: TextIO | None = None, broker: str | None = None) -> dict:
    demo = config.demo
    # The severity alignment reads every event's scores, and the summary scores the incidents.
    for name in ("scores", "incidents"):
        if getattr(config.sinks, name).type == "none":
            sink = SinkConfig(type="file", path=f"{name}.jsonl")
            config = dataclasses.replace(config, sinks=dataclasses.replace(config.sinks, **{name: sink}))
    stream = SyntheticStream(
        events=demo.events,
        entities=demo.entities,
        seed=demo.seed,
        bad_rate=demo.bad_rate,
        incident_rate=demo.incident_rate,
        start=demo.start,
        interval_seconds=demo.interval_seconds,
        max_event_bytes=config.pipeline.max_event_bytes,
        applications_per_tick=demo.applications_per_tick,
    )
    run_dir = Path(config.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = _fresh_privacy_ledger(config, run_dir)
    with open(run_dir / "truth.jsonl", "wb") as truth:
        for incident in stream.incidents:
            truth.write(msgspec.json.encode(incident) + b"\n")

    progress = Progress(stream.records, enabled=show_progress)
    if broker == "embedded":
        with EmbeddedBroker(log_path=run_dir / "broker.log") as embedded:
            report = _run_through_kafka(config, stream, embedded.bootstrap, progress)
    else:
        records = stream_records(stream)
        report = run_pipeline(
            config,
            lambda _metrics: IteratorSource(records, topic=DEMO_TOPIC, rate=demo.rate, on_emit=progress.advance, stop=STOP),
            bounded=True,
        )
    progress.close()

    alerts = read_alerts(report.alerts_path)
    # Outlier and drift operators look for the incidents, waveform (cnn) operators for abnormal beats.
    evaluation = evaluate(stream.incidents, [(a.key, epoch_ms(a.ts), a.operator) for a in alerts
                                             if a.kind in INCIDENT_KINDS])
    steps = {spec.name: spec.params.step for spec in config.operator_specs() if spec.type == "cnn"}
    beats = {name: evaluate_beats(stream, [(a.key, epoch_ms(a.ts)) for a in alerts if a.operator == name], step)
             for name, step in steps.items()}
    summary = _summary(config, report, alerts, evaluation, len(stream.corrupt_at))
    summary["alert_incidents"] = _alert_incidents(config, stream, report)
    summary["decision_events"] = stream.records - stream.events  # the loan desk's applications and labels
    summary["abnormal_beats"] = {name: {"beats": b.abnormal_beats, "detected": b.detected, "recall": b.recall,
                                        "alerts": b.alerts, "precision": b.precision} for name, b in beats.items()}
    summary["precision"].update({name: b.precision for name, b in beats.items() if name in summary["alerts"]})
    scores = _read_scores(report.outputs.get("scores"))
    summary["severity_alignment"] = _severity_alignment(stream, scores)
    summary["fair_decisions"] = _fair_decisions(config, stream, scores, report)
    summary["private_counts"] = _private_counts(config, stream, scores, report)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(format_summary(summary), file=out)
    return summary


def _run_through_kafka(config: Config, stream: SyntheticStream, bootstrap: str, progress: Progress) -> RunReport:
    config = dataclasses.replace(
        config,
        source=SourceConfig(type="kafka", topics=[DEMO_TOPICS["events"]], mode="tail", start="beginning"),
        kafka=dataclasses.replace(config.kafka, bootstrap_servers=[bootstrap], group_id="vigil-demo"),
        sinks=dataclasses.replace(
            config.sinks,
            alerts=SinkConfig(type="kafka", topic=DEMO_TOPICS["alerts"]),
            dead_letters=SinkConfig(type="kafka", topic=DEMO_TOPICS["dead_letters"]),
            scores=SinkConfig(type="kafka", topic=DEMO_TOPICS["scores"]),
        ),
    )
    settings = KafkaSettings(config.kafka)
    create_topics(settings, {DEMO_TOPICS["events"]: DEMO_PARTITIONS, DEMO_TOPICS["alerts"]: 1, DEMO_TOPICS["dead_letters"]: 1,
                             DEMO_TOPICS["scores"]: 1})
    producer = threading.Thread(target=_produce, args=(settings, stream, config.demo.rate), name="demo-producer", daemon=True)
    producer.start()
    read = 0

    def on_advance(offsets: int) -> None:
        nonlocal read
        read += offsets
        progress.advance(offsets)
        if read >= stream.records:
            STOP.set()  # the same clean stop as SIGTERM: drain, flush, final snapshot

    report = run_pipeline(config, lambda metrics: configured_source(config, metrics, on_advance), bounded=True)
    producer.join()
    report.outputs["alerts"] = report.run_dir / "alerts.jsonl"
    report.outputs["dead_letters"] = report.run_dir / "dead_letters.jsonl"
    _write_back(settings, DEMO_TOPICS["alerts"], report.outputs["alerts"], lambda record: record.value)
    _write_back(settings, DEMO_TOPICS["dead_letters"], report.outputs["dead_letters"], _dead_letter_from_record)
    report.outputs["scores"] = report.run_dir / "scores.jsonl"
    _write_back(settings, DEMO_TOPICS["scores"], report.outputs["scores"], lambda record: record.value)
    return report


def _produce(settings: KafkaSettings, stream: SyntheticStream, rate: float) -> None:
    from confluent_kafka import Producer

    producer = Producer({**settings.librdkafka("producer"), "linger.ms": 20})
    pacer = Pacer(rate)
    records = stream.payloads()
    sent = 0
    while not STOP.is_set():
        allowed = pacer.allowance(sent)
        batch = list(itertools.islice(records, allowed))
        for record in batch:
            producer.produce(DEMO_TOPICS["events"], record.payload, record.key.encode(), timestamp=record.ts_ms)
        sent += len(batch)
        producer.poll(0)
        if allowed and not batch:
            break
        if not allowed:
            STOP.wait(0.01)
    producer.flush()


def _dead_letter_from_record(record) -> bytes:
    headers = {name: value.decode("utf-8") for name, value in record.headers}
    source = SourcePosition(topic=headers["vigil-source-topic"], partition=int(headers["vigil-source-partition"]),
                            offset=int(headers["vigil-source-offset"]))
    return msgspec.json.encode(DeadLetter.of(record.value, headers["vigil-reason"], headers["vigil-detail"], source))


def _write_back(settings: KafkaSettings, topic: str, path: Path, line) -> None:
    """The records of an output topic as a sorted JSON-lines file, for the summary and for reading."""
    path.write_bytes(b"".join(line(record) + b"\n" for record in read_topic(settings, topic)))
    sort_by_source(path)


def _fresh_privacy_ledger(config: Config, run_dir: Path) -> Config:
    """Each demo is a new synthetic world: its dp_count operators keep their ledger in the run directory, emptied
    first, and draw seeded noise (from demo.seed) unless the config seeds them itself."""
    ledger = run_dir / "dp-ledger"
    shutil.rmtree(ledger, ignore_errors=True)
    operators = [dataclasses.replace(op, params={**op.params, "ledger": str(ledger),
                                                  "seed": op.params.get("seed", -1) if op.params.get("seed", -1) >= 0
                                                  else config.demo.seed})
                 if op.type == "dp_count" else op for op in config.operators]
    return dataclasses.replace(config, operators=operators)


def _read_scores(scores_path: Path | None) -> list[_ScoresView]:
    if scores_path is None or not scores_path.exists():
        return []
    decoder = msgspec.json.Decoder(_ScoresView)
    return [decoder.decode(line) for line in scores_path.read_bytes().splitlines() if line]


def _severity_alignment(stream: SyntheticStream, records: list[_ScoresView]) -> dict:
    """Per outlier operator: tau-b and C-index of incident grades against 1 - p (see pipeline.evaluation.severity)."""
    if not records:
        return {}
    labels = severity_labels(stream.incidents, [(r.key, epoch_ms(r.ts)) for r in records])
    result = {}
    for name in sorted({name for r in records for name in r.scores if name.endswith(P_VALUE_SUFFIX)}):
        p = np.array([np.nan if r.scores.get(name) is None else r.scores[name] for r in records])
        result[name.removesuffix(P_VALUE_SUFFIX)] = alignment(labels, 1.0 - p)
    return result


def _fair_decisions(config: Config, stream: SyntheticStream, records: list[_ScoresView], report: RunReport) -> dict:
    """Per fair_decision operator: its λ, and the accuracy (against whether the loan was repaid, known for every
    application) and demographic parity of all its decisions; with the label outcomes it counted."""
    applicants = stream.applicants
    truth = {app: (group, label) for app, group, label in zip(applicants.ids, applicants.group.tolist(),
                                                               applicants.label.tolist())}
    count = lambda name, **labels: int(report.metrics.registry.get_sample_value(name, labels) or 0)  # noqa: E731
    result = {}
    for spec in config.operator_specs():
        if spec.type != "fair_decision":
            continue
        made = [(truth[r.id], r.scores[spec.name]) for r in records
                if r.id in truth and r.scores.get(spec.name) is not None]
        if not made:
            continue
        group = np.array([g for (g, _), _ in made])
        label = np.array([y for (_, y), _ in made])
        decision = np.array([d for _, d in made])
        rates = [float(decision[group == g].mean()) for g in (0, 1)]
        result[spec.name] = {
            "fairness": spec.params.fairness, "decisions": len(made), "accuracy": float((decision == label).mean()),
            "demographic_parity": abs(rates[0] - rates[1]), "approval_rates": dict(zip(GROUPS, rates)),
            "labels": {outcome: count("vigil_fairness_labels_total", operator=spec.name, outcome=outcome)
                       for outcome in ("joined", "late", "never")},
        }
    return result


def _summary(config: Config, report: RunReport, alerts: list[_AlertView], evaluation: Evaluation, injected_bad: int) -> dict:
    return {
        **summarize(report, Counter((alert.operator, alert.severity) for alert in alerts)),
        "seed": config.demo.seed,
        "injected_malformed": injected_bad,
        "precision": {op: evaluation.precision(op) for op in sorted({a.operator for a in alerts if a.kind in INCIDENT_KINDS})}
        | {"all": evaluation.precision()},
        "incidents": evaluation.incidents,
        "detected": evaluation.detected,
        "recall": {kind: evaluation.recall((kind,)) for kind in KINDS}
        | {"spike+level_shift": evaluation.recall(("spike", "level_shift")), "all": evaluation.recall()},
    }


def _alert_incidents(config: Config, stream: SyntheticStream, report: RunReport) -> dict:
    """The outlier and drift alerts grouped into incidents (the incident sink's ``opened`` records), scored against
    the injected incidents as the alerts are: an incident finds one when it opens within it."""
    path = report.outputs.get("incidents")
    if path is None or not path.exists():
        return {}
    decoder = msgspec.json.Decoder(_IncidentView)
    opened = [record for line in path.read_bytes().splitlines() if line
              and (record := decoder.decode(line)).state == "opened" and record.kind in INCIDENT_KINDS]
    grouped = evaluate(stream.incidents, [(i.key, epoch_ms(i.opened), i.operator) for i in opened])
    return {"quiet_seconds": config.incidents.quiet_seconds, "opened": dict(sorted(Counter(i.operator for i in opened).items())),
            "precision": grouped.precision(), "recall": {"spike+level_shift": grouped.recall(("spike", "level_shift")),
                                                         "all": grouped.recall()}}


def _private_counts(config: Config, stream: SyntheticStream, records: list[_ScoresView], report: RunReport) -> dict:
    """Per dp_count operator over the loan desk's regions: its last release (each region's private count and standard
    error) next to the true count of the applications it covers, and the budget its ledger records as spent."""
    applicants = stream.applicants
    result = {}
    for spec in config.operator_specs():
        if spec.type != "dp_count":
            continue
        released = [r for r in records if r.key == DESK and r.scores.get(spec.name) is not None]
        if not released:
            continue
        last = released[-1]
        window_ms = int(round(spec.params.window_seconds * 1000))
        covered = applicants.ts_ms < epoch_ms(last.ts) // window_ms * window_ms  # the windows closed by then
        truth = np.bincount(applicants.region[covered], minlength=len(REGIONS))
        spent, total = (float(report.metrics.registry.get_sample_value(name, {"operator": spec.name}) or 0)
                        for name in ("vigil_dp_budget_spent", "vigil_dp_budget_total"))
        result[spec.name] = {
            "mechanism": spec.params.mechanism, "releases": len(released), "stderr": last.scores[f"{spec.name}.stderr"],
            "counts": {category: {"private": last.scores.get(f"{spec.name}.{category}"),
                                  "true": int(truth[REGIONS.index(category)]) if category in REGIONS else None}
                       for category in spec.params.categories},
            "budget_spent": spent, "budget_total": total,
        }
    return result


def format_summary(s: dict) -> str:
    lines = [f"Vigil demo summary (seed {s['seed']}, run dir {s['run_dir']})", *format_counts(s)]
    lines += ["", f"  {'ground truth':<20}{'injected':>10}{'detected':>10}{'recall':>9}"]
    for kind in KINDS:
        lines.append(f"  {kind:<20}{s['incidents'][kind]:>10}{s['detected'][kind]:>10}{s['recall'][kind]:>9.3f}")
    lines += [
        "",
        f"  recall on spikes and level shifts: {s['recall']['spike+level_shift']:.3f}   "
        f"precision of outlier and drift alerts: {s['precision']['all']:.3f}",
    ]
    grouped = s.get("alert_incidents")
    if grouped:
        counts = ", ".join(f"{op} {n}" for op, n in grouped["opened"].items())
        lines.append(f"  incidents (alerts grouped per entity and operator, {grouped['quiet_seconds']:g} s quiet): "
                     f"{counts or 'none'}; recall on spikes and level shifts {grouped['recall']['spike+level_shift']:.3f}, "
                     f"precision {grouped['precision']:.3f}")
    for op, b in s.get("abnormal_beats", {}).items():
        lines.append(f"  abnormal beats ({op}, streaming CNN): {b['beats']} injected, {b['detected']} detected, "
                     f"recall {b['recall']:.3f}, precision {b['precision']:.3f} ({b['alerts']} alerts)")
    decisions = s.get("fair_decisions", {})
    if decisions:
        lines += ["", "  fair decisions on the loan desk (against repayment, known for every application):"]
    for op, d in decisions.items():
        rates = ", ".join(f"{group} {rate:.2f}" for group, rate in d["approval_rates"].items())
        lines.append(f"  {op:<22} lambda {d['fairness']:<5g} accuracy {d['accuracy']:.3f}   demographic parity "
                     f"{d['demographic_parity']:.3f}   (approval rates {rates}; {d['decisions']} decisions; labels "
                     + ", ".join(f"{n} {outcome}" for outcome, n in d["labels"].items()) + ")")
    for op, p in s.get("private_counts", {}).items():
        counts = ", ".join(f"{category} {c['private']:.0f} ± {p['stderr']:.1f} (true {c['true']})"
                           for category, c in p["counts"].items())
        lines += ["", f"  private counts ({op}, {p['mechanism']} counter, {p['releases']} hourly releases; zCDP rho "
                      f"spent {p['budget_spent']:g} of {p['budget_total']:g}): {counts}"]
    for op, a in s.get("severity_alignment", {}).items():
        lines.append(f"  severity alignment of {op} (grades 0-3 vs calibrated score): "
                     f"Kendall tau-b {a['kendall_tau_b']:.3f} (among anomalies {a['kendall_tau_b_anomalies']:.3f}), "
                     f"C-index {a['c_index']:.3f}")
    return "\n".join(lines)
