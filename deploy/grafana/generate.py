"""Vigil's Grafana dashboards, built with grafana-foundation-sdk and written as JSON for file provisioning.

The JSON under deploy/grafana/dashboards/ is generated: change a panel here, run
``.venv/bin/python deploy/grafana/generate.py`` and commit both. tests/test_dashboards.py fails while the two differ.

Queries read the recording rules of deploy/prometheus/vigil-rules.yml where one exists (a dashboard then costs
Prometheus one series lookup per panel) and Vigil's own metrics otherwise; labels are only the bounded ones Vigil
exports (pipeline/engine/metrics.py), never an entity key. The exception is the series dashboard: it reads the
per-entity series Vigil remote-writes when ``[remote_write]`` is on (pipeline/engine/series_export.py), by their
``entity`` label, whose values remote_write.max_series caps.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import heatmap as heatmap_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard, prometheus

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
# The uid deploy/grafana/provisioning/datasources/vigil.yaml gives the Prometheus datasource.
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="prometheus")
JOB = 'job=~"$job"'
OPERATOR = 'operator=~"$operator"'
ENTITY = 'entity=~"$entity"'
FIELD = 'field=~"$field"'
SERIES_UID = "vigil-series"
# kernels/streaminnc.py StreamingCNN.kernel_name: each step's time goes to vigil_kernel_seconds under it.
CNN_KERNEL = "streaminnc_step"
GRID_WIDTH = 24  # Grafana's grid columns
HEIGHT = 8

PanelBuilder = Builder[dashboard.Panel]


def query(expr: str, legend: str, *, heatmap: bool = False) -> prometheus_builders.Dataquery:
    """A range query on the provisioned Prometheus; heatmap queries return buckets Grafana draws as cells."""
    target = prometheus_builders.Dataquery().datasource(DATASOURCE).expr(expr).legend_format(legend).range()
    if heatmap:
        target.format(prometheus.PromQueryFormat.HEATMAP)
    return target


def with_targets(panel, title: str, description: str, unit: str, queries: Sequence[prometheus_builders.Dataquery]):
    """The settings every panel shares: title, one-line description, unit, datasource and its queries (refIds A, B, ...)."""
    panel.title(title).description(description).unit(unit).datasource(DATASOURCE).height(HEIGHT)
    for index, target in enumerate(queries):
        panel.with_target(target.ref_id(chr(ord("A") + index)))
    return panel


def timeseries(title: str, description: str, unit: str, *queries: prometheus_builders.Dataquery) -> PanelBuilder:
    """Lines over time, with a legend of the series' label values (the legendFormat of each query)."""
    legend = (common_builders.VizLegendOptions()
              .display_mode(common.LegendDisplayMode.LIST).placement(common.LegendPlacement.BOTTOM).show_legend(True))
    return with_targets(timeseries_builders.Panel().legend(legend), title, description, unit, queries)


def ratio_timeseries(title: str, description: str, *queries: prometheus_builders.Dataquery) -> PanelBuilder:
    """A timeseries of ratios whose axis starts at 0, so it does not zoom into noise (softly: an interval's lower bound
    may dip below)."""
    return timeseries(title, description, "percentunit", *queries).axis_soft_min(0)


def band_timeseries(title: str, description: str, unit: str, *lines: prometheus_builders.Dataquery, lower: str,
                    upper: str) -> PanelBuilder:
    """``lines`` over a shaded band from the PromQL ``lower`` up to ``upper``, whose edges are not drawn. Grafana fills
    below to a series named by its display name (here the legends "lower" and "upper"), so each must return one series."""
    edge = dashboard.DynamicConfigValue(id_val="custom.lineWidth", value=0)
    fill = [dashboard.DynamicConfigValue(id_val="custom.fillBelowTo", value="lower"),
            dashboard.DynamicConfigValue(id_val="custom.fillOpacity", value=20)]
    return (timeseries(title, description, unit, *lines, query(lower, "lower"), query(upper, "upper"))
            .override_by_name("lower", [edge])
            .override_by_name("upper", [edge, *fill]))


def summed_rate(metric: str, by: str, legend: str) -> prometheus_builders.Dataquery:
    """The per-second rate of counter ``metric`` over 5 minutes, summed by the labels ``by`` (a comma-separated list)."""
    return query(f"sum by ({by}) (rate({metric}{{{JOB}}}[5m]))", legend)


def stat(title: str, description: str, unit: str, *queries: prometheus_builders.Dataquery,
         thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),)) -> PanelBuilder:
    """The latest value, coloured by ``thresholds`` (value, colour) pairs; None is the base step."""
    steps = [dashboard.Threshold(value=value, color=colour) for value, colour in thresholds]
    panel = (stat_builders.Panel()
             .graph_mode(common.BigValueGraphMode.AREA)
             .color_mode(common.BigValueColorMode.BACKGROUND)
             .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
             .thresholds(dashboard_builders.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(steps)))
    return with_targets(panel, title, description, unit, queries)


def bucket_heatmap(title: str, description: str, histogram: str, matchers: str) -> PanelBuilder:
    """A Prometheus histogram's buckets over time: each cell is the rate of observations at most its ``le`` (scores and
    p-values have no unit)."""
    expr = f"sum by (le) (rate({histogram}_bucket{{{matchers}}}[5m]))"
    panel = (heatmap_builders.Panel()
             .calculate(False)
             .rows_frame(heatmap_builders.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
             .y_axis(heatmap_builders.YAxisConfig().unit("short"))
             .cell_values(heatmap_builders.CellValues().unit("ops")))
    return with_targets(panel, title, description, "ops", [query(expr, "{{le}}", heatmap=True)])


def variable(name: str, label: str, selector: str, description: str, *,
             include_all: bool = True) -> dashboard_builders.QueryVariable:
    """A multi-select of ``name``'s label values on ``selector``, All by default unless ``include_all`` is False (then
    the first value)."""
    return (dashboard_builders.QueryVariable(name)
            .label(label).description(description)
            .datasource(DATASOURCE).query(f"label_values({selector}, {name})")
            .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dashboard.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(include_all))


def job_variable() -> dashboard_builders.QueryVariable:
    return variable("job", "Job", "vigil_build_info", "Prometheus job of the Vigil processes (a cluster).")


class PrometheusAnnotation(dashboard.AnnotationQuery):
    """Annotations from a PromQL query on the provisioned Prometheus: each run of samples of a series it returns is one
    region, titled by ``title_format`` (a legend format) and tagged with the values of the ``tag_keys`` labels. The
    pinned SDK's model lacks these two fields of Grafana's Prometheus annotations (later SDK versions have them)."""

    def __init__(self, name: str, expr: str, icon_color: str, *, title_format: str, tag_keys: Sequence[str]) -> None:
        super().__init__(name=name, datasource=DATASOURCE, icon_color=icon_color, expr=expr)
        self.title_format = title_format
        self.tag_keys = ",".join(tag_keys)

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "titleFormat": self.title_format, "tagKeys": self.tag_keys}


def build(uid: str, title: str, description: str, variables: Sequence[dashboard_builders.QueryVariable],
          rows: Sequence[tuple[str, Sequence[PanelBuilder]]],
          annotations: Sequence[PrometheusAnnotation] = ()) -> dashboard.Dashboard:
    """A dashboard of expanded rows, each followed by its panels, which share the row's width; ids count up over rows
    and panels alike. Every dashboard but the series one links to it, beside the dropdown of all Vigil dashboards."""
    other_dashboards = (dashboard_builders.DashboardLink("Vigil")
                        .type(dashboard.DashboardLinkType.DASHBOARDS).tags(["vigil"])
                        .as_dropdown(True).include_vars(True).keep_time(True))
    board = (dashboard_builders.Dashboard(title)
             .uid(uid).description(description).tags(["vigil"])
             .readonly()  # provisioned from generate.py's output: edits belong there
             .time("now-6h", "now").refresh("30s")
             .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
             .link(other_dashboards))
    if uid != SERIES_UID:  # the drill-down from a cluster's aggregates to one entity's series
        board.link(dashboard_builders.DashboardLink("Series")
                   .type(dashboard.DashboardLinkType.LINK).url(f"/d/{SERIES_UID}").icon("dashboard")
                   .tooltip("One entity's values, expected bands, scores and incidents")
                   .include_vars(True).keep_time(True))
    for var in variables:
        board.with_variable(var)
    next_id = 1
    for row_title, panels in rows:
        board.with_row(dashboard_builders.Row(row_title).id(next_id))
        next_id += 1
        for panel in panels:
            board.with_panel(panel.id(next_id).span(GRID_WIDTH // len(panels)))
            next_id += 1
    built = board.build()
    if annotations:  # the builder takes builders only, which PrometheusAnnotation is not
        built.annotations = dashboard.AnnotationContainer(list_val=list(annotations))
    return built


def pipeline() -> dashboard.Dashboard:
    return build("vigil-pipeline", "Vigil / Pipeline health",
                 "Throughput, dead letters, lag, batching, kernels, state and recovery of the Vigil processes.",
                 [job_variable()], [
        ("Input", [
            timeseries("Throughput", "Records read per second, by decode outcome.", "ops",
                       query(f"vigil:events:rate5m{{{JOB}}}", "{{job}} {{outcome}}")),
            timeseries("Invalid events by reason", "Records sent to the dead-letter sink per second, by reason.", "ops",
                       query(f"vigil:events_invalid:rate5m{{{JOB}}}", "{{job}} {{reason}}")),
            ratio_timeseries("Dead-letter ratio", "Share of the records read that went to the dead-letter sink.",
                             query(f"vigil:events_invalid:ratio_rate5m{{{JOB}}}", "{{job}}")),
        ]),
        ("Lag", [
            timeseries("Consumer lag (records)", "Records in the source partitions not yet read, per topic.", "short",
                       query(f"vigil:consumer_lag_messages:sum{{{JOB}}}", "{{job}} {{topic}}")),
            timeseries("Consumer lag (age)", "Age of the oldest record being read on a lagging partition, per topic.", "s",
                       query(f"vigil:consumer_lag_seconds:max{{{JOB}}}", "{{job}} {{topic}}")),
            timeseries("Event-time lag p99", "99th percentile of processing time minus event time.", "s",
                       query(f"vigil:event_lag_seconds:p99_5m{{{JOB}}}", "{{job}}")),
        ]),
        ("Batching and kernels", [
            timeseries("Batch size (mean)", "Mean events per micro-batch handed to a shard's operators.", "short",
                       query(f"vigil:batch_size:mean_5m{{{JOB}}}", "{{job}}")),
            timeseries("Batch wait p99", "99th percentile of how long a micro-batch's oldest event waited.", "s",
                       query(f"vigil:batch_wait_seconds:p99_5m{{{JOB}}}", "{{job}}")),
            timeseries("Kernel latency p99", "99th percentile of one batched kernel call, by kernel and device.", "s",
                       query(f"vigil:kernel_seconds:p99_5m{{{JOB}}}", "{{job}} {{kernel}} {{device}}")),
            timeseries("Kernel calls", "Batched kernel calls per second, by kernel and device.", "ops",
                       query(f"vigil:kernel_calls:rate5m{{{JOB}}}", "{{job}} {{kernel}} {{device}}")),
        ]),
        ("State", [
            stat("Live entities", "Entities with live state, over every process.", "short",
                 query(f"sum by (job) (vigil_entities{{{JOB}}})", "{{job}}")),
            timeseries("Evictions", "Entities whose state was freed per second, by rule (ttl or capacity).", "ops",
                       query(f"vigil:entities_evicted:rate5m{{{JOB}}}", "{{job}} {{reason}}")),
            timeseries("Operator state", "Memory held by each operator's state, over every process.", "bytes",
                       query(f"sum by (job, operator) (vigil_operator_state_bytes{{{JOB}}})", "{{job}} {{operator}}")),
        ]),
        ("Recovery", [
            timeseries("Snapshot duration p99", "99th percentile of the time to snapshot one shard's state.", "s",
                       query(f"vigil:snapshot_seconds:p99_5m{{{JOB}}}", "{{job}}")),
            stat("Snapshot age", "Time since the job's latest state snapshot (Bytewax takes one per epoch).", "s",
                 query(f"time() - max by (job) (vigil_last_snapshot_timestamp_seconds{{{JOB}}})", "{{job}}")),
        ]),
        ("Brokers and operators", [
            stat("Broker up", "1 while every process reaches all its Kafka brokers, 0 during an outage.", "short",
                 query(f"min by (job) (vigil_broker_up{{{JOB}}})", "{{job}}"), thresholds=((None, "red"), (1, "green"))),
            timeseries("Operator failures", "Batches per second on which an operator raised (its events dead-lettered).",
                       "ops", query(f"vigil:operator_failures:rate5m{{{JOB}}}", "{{job}} {{operator}}")),
        ]),
    ])


def score_quantiles(title: str, description: str) -> PanelBuilder:
    """The median and 99th percentile of the selected operators' published scores (vigil_score)."""
    return timeseries(title, description, "short",
                      query(f"vigil:score:p50_5m{{{JOB}, {OPERATOR}}}", "p50 {{job}} {{operator}}"),
                      query(f"vigil:score:p99_5m{{{JOB}, {OPERATOR}}}", "p99 {{job}} {{operator}}"))


def detection() -> dashboard.Dashboard:
    operator_variable = variable("operator", "Operator", f"vigil_score_count{{{JOB}}}",
                                 "Operators whose scores the quantiles and heatmaps show.")
    return build("vigil-detection", "Vigil / Detection",
                 "Alerts, drift alarms and the distributions of the operators' scores and p-values.",
                 [job_variable(), operator_variable], [
        ("Alerts and drift", [
            timeseries("Alerts", "Alerts emitted per second, by operator and severity.", "ops",
                       query(f"vigil:alerts:rate5m{{{JOB}}}", "{{job}} {{operator}} {{severity}}")),
            timeseries("Drift alarms", "Drift alarms per second, by operator and watched field.", "ops",
                       query(f"vigil:drift:rate5m{{{JOB}}}", "{{job}} {{operator}} {{field}}")),
            timeseries("Scores", "Scores published per second, by operator.", "ops",
                       query(f"vigil:scores:rate5m{{{JOB}, {OPERATOR}}}", "{{job}} {{operator}}")),
        ]),
        ("Scores", [
            score_quantiles("Score quantiles", "Median and 99th percentile of each operator's scores, on its own scale."),
            bucket_heatmap("Score distribution", "Scores per second by bucket, over the selected operators.",
                           "vigil_score", f"{JOB}, {OPERATOR}"),
            bucket_heatmap("p-value distribution", "Calibrated p-values per second by bucket (only scores in the "
                           "calibration tail get one).", "vigil_score_p_value", f"{JOB}, {OPERATOR}"),
        ]),
    ])


def cnn() -> dashboard.Dashboard:
    operator_variable = variable("operator", "CNN operator", f"vigil_score_count{{{JOB}}}",
                                 'Operators of type "cnn" (the demo\'s is beats): each publishes one score per step.')
    kernel = f'kernel="{CNN_KERNEL}"'
    return build("vigil-cnn", "Vigil / Streaming CNN",
                 "Streaming CNN (StreamiNNC) operators: steps, step latency and outputs over threshold.",
                 [job_variable(), operator_variable], [
        ("Steps", [
            timeseries("Steps per second", "Steps the selected CNN operators took per second (one score per step).", "ops",
                       query(f"vigil:scores:rate5m{{{JOB}, {OPERATOR}}}", "{{job}} {{operator}}")),
            timeseries("Step latency p99", "99th percentile of one batched step, over every CNN operator, by device.", "s",
                       query(f"vigil:kernel_seconds:p99_5m{{{JOB}, {kernel}}}", "{{job}} {{device}}")),
            timeseries("Step calls", "Batched step calls per second, over every CNN operator, by device.", "ops",
                       query(f"vigil:kernel_calls:rate5m{{{JOB}, {kernel}}}", "{{job}} {{device}}")),
        ]),
        ("Outputs", [
            timeseries("Outputs over threshold", "Alerts per second: steps whose output reached the threshold.", "ops",
                       query(f"vigil:alerts:rate5m{{{JOB}, {OPERATOR}}}", "{{job}} {{operator}} {{severity}}")),
            score_quantiles("Output quantiles", "Median and 99th percentile of the selected operators' outputs."),
        ]),
    ])


def privacy() -> dashboard.Dashboard:
    return build("vigil-privacy", "Vigil / Privacy",
                 "Differentially private counts (dp_count): privacy budget, exhausted streams and releases.",
                 [job_variable()], [
        ("Budget", [
            timeseries("Budget spent and total", "Privacy (zCDP rho) spent by each operator's streams, and their budget.",
                       "short", query(f"sum by (job, operator) (vigil_dp_budget_spent{{{JOB}}})", "spent {{job}} {{operator}}"),
                       query(f"sum by (job, operator) (vigil_dp_budget_total{{{JOB}}})", "total {{job}} {{operator}}")),
            ratio_timeseries("Budget remaining", "Share of each operator's privacy budget not yet spent.",
                             query(f"vigil:dp_budget_remaining:ratio{{{JOB}}}", "{{job}} {{operator}}")),
            timeseries("Exhausted streams", "Streams whose budget cannot pay another epoch, per operator.", "short",
                       query(f"sum by (job, operator) (vigil_dp_streams_exhausted{{{JOB}}})", "{{job}} {{operator}}")),
        ]),
        ("Releases", [
            timeseries("Releases by outcome", "Windows per second by outcome: released, refused (no budget) or late.",
                       "ops", query(f"vigil:dp_releases:rate5m{{{JOB}}}", "{{job}} {{operator}} {{outcome}}")),
            timeseries("Released counts", "Latest private running count per category, summed over the streams.", "short",
                       query(f"sum by (job, operator, category) (vigil_dp_released_count{{{JOB}}})",
                             "{{job}} {{operator}} {{category}}")),
        ]),
    ])


def fairness() -> dashboard.Dashboard:
    def per_process_ratio(title: str, description: str, metric: str, selector: str, legend: str) -> PanelBuilder:
        return ratio_timeseries(title, description, query(f"{metric}{{{JOB}, {selector}}}", legend))

    return build("vigil-fairness", "Vigil / Fairness",
                 "Fairness monitors: per-group decision rates, parity and opportunity gaps with their intervals, labels.",
                 [job_variable()], [
        ("Rates", [
            ratio_timeseries("Group rates (cluster)", "Positive rate per group over every process's sliding windows "
                             "(window=parity: all decisions; opportunity: truly positive instances).",
                             query(f"vigil:fairness_window_rate{{{JOB}}}", "{{job}} {{operator}} {{window}} {{group}}")),
            per_process_ratio("Positive rate (parity)", "Per process and group: positive rate with its Wilson interval.",
                              "vigil_fairness_positive_ratio", 'window="parity"',
                              "{{instance}} {{operator}} {{group}} {{bound}}"),
            per_process_ratio("True-positive rate (opportunity)", "Per process and group: true-positive rate with its "
                              "Wilson interval.", "vigil_fairness_positive_ratio", 'window="opportunity"',
                              "{{instance}} {{operator}} {{group}} {{bound}}"),
        ]),
        ("Gaps", [
            per_process_ratio("Demographic-parity gap", "Per process: highest minus lowest group positive rate, with its "
                              "Newcombe interval.", "vigil_fairness_gap_ratio", 'gap="parity"',
                              "{{instance}} {{operator}} {{bound}}"),
            per_process_ratio("Equal-opportunity gap", "Per process: highest minus lowest group true-positive rate, with "
                              "its Newcombe interval.", "vigil_fairness_gap_ratio", 'gap="opportunity"',
                              "{{instance}} {{operator}} {{bound}}"),
        ]),
        ("Decisions and labels", [
            timeseries("Decisions", "Decisions per second, per operator and group.", "ops",
                       summed_rate("vigil_fairness_decisions_total", "job, operator, group", "{{job}} {{operator}} {{group}}")),
            timeseries("Pending decisions", "Decisions waiting for their labels.", "short",
                       query(f"sum by (job, operator) (vigil_fairness_pending_decisions{{{JOB}}})", "{{job}} {{operator}}")),
            timeseries("Labels by outcome", "Labels per second: joined their decision, late (none waiting) or never.",
                       "ops", summed_rate("vigil_fairness_labels_total", "job, operator, outcome",
                                          "{{job}} {{operator}} {{outcome}}")),
        ]),
    ])


def series() -> dashboard.Dashboard:
    # Multi-select, as Grafana regex-escapes only a multi-value variable's values (a key may hold "|" or "."), but no
    # All: every exported entity at once would be remote_write.max_series series in a panel.
    entity_variable = variable("entity", "Entity", "vigil_series_value",
                               "Entities (whole keys) whose series the panels show.", include_all=False)
    field_variable = variable("field", "Field", f"vigil_series_value{{{ENTITY}}}",
                              "Input fields of the entity: one actual-vs-expected panel each.")
    operator_variable = variable("operator", "Operator", f"vigil_series_score{{{ENTITY}}}",
                                 "Outlier operators whose scores, expected bands and incidents the panels show.")
    # Remote-written series carry no job label (unless remote_write.labels adds one): only the process metrics filter by it.
    of_operators = f"{ENTITY}, {OPERATOR}"
    of_field = f"{ENTITY}, {OPERATOR}, {FIELD}"
    # min and max: one band however many entities and operators are selected (for one of each, exactly its band).
    actual_vs_expected = band_timeseries(
        "Actual vs expected: $field", "The field's value, the operators' expected values, and the band they expect it "
        "in (over several entities or operators, the band spans theirs).", "short",
        query(f"vigil_series_value{{{ENTITY}, {FIELD}}}", "value {{entity}}"),
        query(f"vigil_series_expected{{{of_field}}}", "expected {{entity}} {{operator}}"),
        lower=f"min by (field) (vigil_series_lower{{{of_field}}})", upper=f"max by (field) (vigil_series_upper{{{of_field}}})")
    incidents = PrometheusAnnotation("Incidents", f"vigil_series_incident_open{{{of_operators}}} == 1", "red",
                                     title_format="{{operator}} incident: {{entity}}", tag_keys=["operator"])
    return build(SERIES_UID, "Vigil / Series",
                 "Entities' series as Vigil remote-writes them ([remote_write]): input values against the operators' "
                 "expected bands, scores and incidents. Only remote_write.max_series series are exported, which bounds "
                 "the entity label's values.",
                 [entity_variable, field_variable, operator_variable, job_variable()], [
        ("Actual vs expected", [actual_vs_expected.repeat("field").repeat_direction("h").max_per_row(2)]),
        ("Scores and incidents", [
            timeseries("Anomaly score", "Each selected operator's latest score of the entities, on its own scale.", "short",
                       query(f"vigil_series_score{{{of_operators}}}", "{{entity}} {{operator}}")),
            timeseries("Open incidents", "1 while an entity has an open incident of the operator, else 0.", "short",
                       query(f"vigil_series_incident_open{{{of_operators}}}", "{{entity}} {{operator}}"))
            .line_interpolation(common.LineInterpolation.STEP_AFTER),
        ]),
        ("Export health", [
            timeseries("Exported series", "Series each process remote-writes, at most remote_write.max_series.", "short",
                       query(f"sum by (job) (vigil_exported_series{{{JOB}}})", "{{job}}")),
            timeseries("Samples written", "Samples remote-written and accepted per second.", "ops",
                       summed_rate("vigil_export_samples_total", "job", "{{job}}")),
            timeseries("Samples dropped", "Samples not remote-written per second, by reason (cap, rejected, unreachable).",
                       "ops", summed_rate("vigil_export_dropped_total", "job, reason", "{{job}} {{reason}}")),
            timeseries("Alertmanager posts", "Incident posts to Alertmanager per second by outcome, and records "
                       "dead-lettered by reason.", "ops",
                       summed_rate("vigil_alertmanager_posts_total", "job, outcome", "posts {{job}} {{outcome}}"),
                       summed_rate("vigil_alertmanager_dead_letters_total", "job, reason", "dead letters {{job}} {{reason}}")),
        ]),
    ], [incidents])


DASHBOARDS = {"pipeline": pipeline, "detection": detection, "cnn": cnn, "privacy": privacy, "fairness": fairness,
              "series": series}


def render(board: dashboard.Dashboard) -> str:
    """Stable JSON (sorted keys, two-space indent, trailing newline), so regenerating changes nothing unless a panel did."""
    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """File name to JSON text of every dashboard."""
    return {f"{name}.json": render(make()) for name, make in DASHBOARDS.items()}


def main() -> int:
    DASHBOARDS_DIR.mkdir(exist_ok=True)
    for filename, text in rendered().items():
        (DASHBOARDS_DIR / filename).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
