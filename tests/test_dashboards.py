"""The Grafana dashboards of deploy/grafana: committed as generate.py writes them, well-formed for Grafana, and querying
only series Vigil exports, remote-writes or records, by bounded labels (an entity key as a label would make one series
per entity; only the series dashboard, which reads the opt-in remote-written series, may select an entity)."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from pipeline.engine.metrics import Metrics
from pipeline.engine.series_export import SERIES_METRICS

GRAFANA = Path(__file__).resolve().parents[1] / "deploy" / "grafana"
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "vigil-rules.yml"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
ALLOWED_LABELS = {"job", "instance", "operator", "severity", "reason", "outcome", "field", "kernel", "device", "topic",
                  "partition", "category", "group", "window", "gap", "bound", "le", "version"}
# The series dashboard may also select by entity (field is allowed everywhere): the series it reads are remote-written
# only when [remote_write] is configured, and remote_write.max_series caps them, and with them the entity label's values.
# Key-part labels (host, service) stay forbidden there too.
SERIES_UID = "vigil-series"
SERIES_LABELS = ALLOWED_LABELS | {"entity"}
# Fields of Grafana's Prometheus annotations that the pinned SDK's AnnotationQuery lacks (later SDK versions have them).
PROMETHEUS_ANNOTATION_FIELDS = ("titleFormat", "tagKeys")
# Series names a family of each type exposes, as suffixes of the family name; a labelled family without children
# yields no samples from collect(), so its series names come from its type.
SERIES_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
                   "info": ("_info",), "summary": ("_count", "_sum", "_created")}

TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<operator>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){},])
  | (?P<space>\s+)
""", re.VERBOSE)
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}  # followed by a list of label names
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
VARIABLE_MATCH = re.compile(r'(=~|!~|!=|=)\s*"[^"]*\$')  # the matcher operator before a string holding a variable
SELECTED = re.compile(r'(\w+)=~"\$\{?(\w+)\}?"')


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and label names in a PromQL expression: names not followed by ``(`` or ``by``/``without``
    (functions, aggregations) are metrics, unless they are keywords or sit inside ``{...}`` matchers or a
    ``by (...)``-style list (labels)."""
    tokens, position = [], 0
    while position < len(expr):
        match = TOKEN.match(expr, position)
        assert match, f"cannot tokenise {expr[position:]!r} in {expr!r}"
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
        position = match.end()
    metrics: set[str] = set()
    labels: set[str] = set()
    in_matchers = in_grouping = False
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if text == "{":
            in_matchers = True
        elif text == "}":
            in_matchers = False
        elif text == ")":
            in_grouping = False
        elif kind != "name":
            continue
        elif in_matchers or in_grouping:
            labels.add(text)
        elif text in GROUPING:
            in_grouping = following == "("
        elif following != "(" and following not in ("by", "without") and text not in KEYWORDS:
            metrics.add(text)
    return metrics, labels


@pytest.mark.parametrize(("expr", "metrics", "labels"), [
    ('histogram_quantile(0.99, sum by (job, le) (rate(vigil_event_lag_seconds_bucket{job=~"$job"}[5m])))',
     {"vigil_event_lag_seconds_bucket"}, {"job", "le"}),
    ("time() - max by (job) (vigil_last_snapshot_timestamp_seconds)", {"vigil_last_snapshot_timestamp_seconds"}, {"job"}),
    ('(sum without (instance) (a_total) / on (job) group_left (topic) b{x!="1"}) and c >= 30',
     {"a_total", "b", "c"}, {"instance", "job", "topic", "x"}),
    ('vigil:kernel_seconds:p99_5m{kernel="sum(x)"} offset 1e3', {"vigil:kernel_seconds:p99_5m"}, {"kernel"}),
])
def test_promql_names(expr, metrics, labels):
    assert promql_names(expr) == (metrics, labels)


def load_generator():
    spec = importlib.util.spec_from_file_location("vigil_grafana_generate", GRAFANA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def exported_metrics() -> set[str]:
    """Series names of Vigil's /metrics, with every optional family registered."""
    names = set()
    for family in Metrics(remote_write=True, alertmanager=True).registry.collect():
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def recording_rules() -> dict[str, str]:
    """Record name to expression, of the group dashboards read."""
    groups = {group["name"]: group["rules"] for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]}
    return {rule["record"]: rule["expr"] for rule in groups["vigil-recording"]}


def all_panels(panels: list[dict]) -> list[dict]:
    """Every panel, rows and those nested in (collapsed) rows included."""
    return [inner for panel in panels for inner in [panel, *all_panels(panel.get("panels", []))]]


def annotations(board: dict) -> list[dict]:
    return board["annotations"].get("list", [])


def queries(board: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, every annotation and every variable's selector."""
    found = [(f"panel {panel['title']!r}", target["expr"])
             for panel in all_panels(board["panels"]) for target in panel.get("targets", [])]
    found += [(f"annotation {annotation['name']!r}", annotation["expr"]) for annotation in annotations(board)]
    for variable in board["templating"]["list"]:
        match = LABEL_VALUES.fullmatch(variable["query"])
        assert match, f"variable {variable['name']}: expected label_values(selector, label), got {variable['query']!r}"
        found.append((f"variable {variable['name']!r}", match["selector"]))
    return found


def test_committed_dashboards_are_current():
    committed = {path.name: path.read_text(encoding="utf-8") for path in DASHBOARD_FILES}
    assert committed == load_generator().rendered(), "run .venv/bin/python deploy/grafana/generate.py and commit the JSON"


def test_six_vigil_dashboards():
    assert {load(path)["uid"] for path in DASHBOARD_FILES} == {
        "vigil-pipeline", "vigil-detection", "vigil-cnn", "vigil-privacy", "vigil-fairness", SERIES_UID}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_dashboard_is_grafana_json(path):
    board = load(path)
    assert isinstance(board["uid"], str) and board["uid"].startswith("vigil-")
    assert isinstance(board["title"], str) and board["title"]
    assert isinstance(board["schemaVersion"], int)
    assert isinstance(board["panels"], list) and board["panels"]
    assert isinstance(board["templating"]["list"], list)
    assert set(board["time"]) == {"from", "to"}
    # The SDK's model decodes the fields Grafana's schema has: one it drops or rewrites is not Grafana's. (It may add
    # defaults: an empty fieldConfig.defaults.custom of a timeseries.) Only the annotation fields it lacks are set aside,
    # and must be strings.
    register_default_plugins()
    for annotation in annotations(board):
        for name in PROMETHEUS_ANNOTATION_FIELDS:
            assert isinstance(annotation.pop(name, ""), str), (annotation["name"], name)
    assert kept(board, json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder)))


def kept(original, decoded) -> bool:
    """Whether ``decoded`` holds every field of ``original`` with the same value, recursively."""
    if isinstance(original, dict):
        return isinstance(decoded, dict) and all(key in decoded and kept(value, decoded[key]) for key, value in original.items())
    if isinstance(original, list):
        return isinstance(decoded, list) and len(original) == len(decoded) and all(map(kept, original, decoded))
    return original == decoded


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_panel_ids_are_unique(path):
    ids = [panel["id"] for panel in all_panels(load(path)["panels"])]
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_panels_are_described_placed_and_targeted(path):
    for panel in all_panels(load(path)["panels"]):
        assert panel.get("title"), panel
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, f"{panel['title']} overflows the grid"
        if panel["type"] == "row":
            continue
        assert panel.get("description"), panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target.get("expr", "").strip(), panel["title"]
            assert target.get("legendFormat"), panel["title"]
            if panel["type"] == "heatmap":
                assert target["format"] == "heatmap" and "by (le)" in target["expr"], panel["title"]
    for variable in load(path)["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE, variable["name"]
    for annotation in annotations(load(path)):
        assert annotation["datasource"] == DATASOURCE and annotation.get("expr", "").strip(), annotation["name"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_queries_read_exported_or_recorded_metrics(path):
    known = exported_metrics() | set(SERIES_METRICS) | set(recording_rules())
    for where, expr in queries(load(path)):
        metrics, _ = promql_names(expr)
        assert metrics, f"{where}: no metric in {expr!r}"
        assert metrics <= known, f"{where}: {sorted(metrics - known)} neither exported nor recorded"


def test_recording_rules_read_exported_metrics():
    exported = exported_metrics()
    for record, expr in recording_rules().items():
        metrics, labels = promql_names(expr)
        assert metrics and metrics <= exported, f"{record}: {sorted(metrics - exported)} not exported"
        assert labels <= ALLOWED_LABELS, f"{record}: labels {sorted(labels - ALLOWED_LABELS)}"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_queries_use_bounded_labels_only(path):
    board = load(path)
    allowed = SERIES_LABELS if board["uid"] == SERIES_UID else ALLOWED_LABELS
    for where, expr in queries(board):
        _, labels = promql_names(expr)
        assert labels <= allowed, f"{where}: labels {sorted(labels - allowed)} in {expr!r}"
    for variable in board["templating"]["list"]:
        assert LABEL_VALUES.fullmatch(variable["query"])["label"] in allowed, variable["name"]
    for panel in all_panels(board["panels"]):
        for target in panel.get("targets", []):
            legend_labels = set(LEGEND_LABEL.findall(target["legendFormat"]))
            assert legend_labels <= allowed, f"{panel['title']}: legend labels {sorted(legend_labels - allowed)}"
    for annotation in annotations(board):
        shown = set(LEGEND_LABEL.findall(annotation.get("titleFormat", ""))) | set(
            filter(None, annotation.get("tagKeys", "").split(",")))
        assert shown <= allowed, f"annotation {annotation['name']}: labels {sorted(shown - allowed)} in its title or tags"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_variables_are_matched_by_regex(path):
    """A multi-value or All variable expands to a regex, and bench/monitoring.py fills every one in as ``.*``."""
    for where, expr in queries(load(path)):
        assert set(VARIABLE_MATCH.findall(expr)) <= {"=~"}, f"{where}: a variable matched without =~ in {expr!r}"


def series_board() -> dict:
    [board] = [board for board in map(load, DASHBOARD_FILES) if board["uid"] == SERIES_UID]
    return board


def selected(expr: str) -> set[str]:
    """The labels ``expr`` matches by the variable of the same name (``entity=~"$entity"``)."""
    return {label for label, variable in SELECTED.findall(expr) if label == variable}


def test_series_dashboard_shows_each_field_against_its_band():
    board = series_board()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    # Picked, not All (that would be every exported entity); multi, so Grafana regex-escapes the key.
    assert variables["entity"]["multi"] and not variables["entity"]["includeAll"]
    assert variables["field"]["multi"] and variables["field"]["includeAll"] and variables["operator"]["includeAll"]
    [panel] = [panel for panel in all_panels(board["panels"])
               if any("vigil_series_value" in promql_names(target["expr"])[0] for target in panel.get("targets", []))]
    assert panel["repeat"] == "field" and "$field" in panel["title"]  # one panel per field: one value and one band each
    by_metric = {}
    for target in panel["targets"]:
        [metric] = promql_names(target["expr"])[0]
        by_metric[metric] = target
        assert {"entity", "field"} <= selected(target["expr"]), target["expr"]
    assert set(by_metric) == {"vigil_series_value", "vigil_series_expected", "vigil_series_lower", "vigil_series_upper"}
    for metric in ("vigil_series_expected", "vigil_series_lower", "vigil_series_upper"):
        assert "operator" in selected(by_metric[metric]["expr"]), metric
    # Grafana shades from the upper series down to the one its fillBelowTo names: each is one series of a fixed name.
    lower, upper = by_metric["vigil_series_lower"]["legendFormat"], by_metric["vigil_series_upper"]["legendFormat"]
    assert not LEGEND_LABEL.search(lower) and not LEGEND_LABEL.search(upper)
    overrides = {override["matcher"]["options"]: {item["id"]: item["value"] for item in override["properties"]}
                 for override in panel["fieldConfig"]["overrides"] if override["matcher"]["id"] == "byName"}
    assert overrides[upper]["custom.fillBelowTo"] == lower and overrides[upper]["custom.fillOpacity"] > 0


def test_series_dashboard_annotates_open_incidents():
    [annotation] = annotations(series_board())
    metrics, _ = promql_names(annotation["expr"])
    assert metrics == {"vigil_series_incident_open"} and annotation["expr"].endswith("== 1")
    assert "entity" in selected(annotation["expr"]) and annotation["enable"]
    assert "{{operator}}" in annotation["titleFormat"]


def test_dashboards_link_to_the_series_dashboard():
    for board in map(load, DASHBOARD_FILES):
        links = board["links"]
        # The dropdown of every Vigil dashboard, the series one's way back included.
        assert any(link["type"] == "dashboards" and link["tags"] == ["vigil"] for link in links), board["uid"]
        assert "vigil" in board["tags"], board["uid"]
        to_series = [link for link in links if link["type"] == "link" and link["url"] == f"/d/{SERIES_UID}"]
        assert len(to_series) == (board["uid"] != SERIES_UID), board["uid"]
        assert all(link["keepTime"] and link["includeVars"] for link in to_series), board["uid"]


def test_cnn_dashboard_names_the_streaming_kernel():
    from kernels.streaminnc import StreamingCNN

    assert load_generator().CNN_KERNEL == StreamingCNN.kernel_name


def test_provisioning_matches_the_dashboards():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "vigil.yaml").read_text(encoding="utf-8"))
    [prometheus] = datasources["datasources"]
    assert (prometheus["type"], prometheus["uid"]) == (DATASOURCE["type"], DATASOURCE["uid"])
    assert prometheus["url"] == "http://prometheus:9090" and prometheus["isDefault"] is True
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "vigil.yaml").read_text(encoding="utf-8"))
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
