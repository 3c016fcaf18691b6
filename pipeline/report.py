"""``vigil report RUN_DIR``: one self-contained HTML file (images embedded) and the PNGs it shows, for a run directory.

A run directory is what ``vigil demo``, ``vigil replay`` and ``vigil run`` write (``scores.jsonl``, ``alerts.jsonl``,
and for the demo ``truth.jsonl`` and ``summary.json``), or a directory of ``vigil score`` outputs (CSV files with the
columns ``timestamp,value,anomaly_score``, optionally a NAB-style ``windows.json`` naming each file's labelled
windows). The report has, per series, a plot of the values (when the run has them), every score, the alert threshold,
the alerts by severity, drift alerts as vertical lines and labelled windows as shaded spans; and tables: alerts by
operator and severity, and the quality figures when labels exist.

Long series are downsampled for plotting without hiding spikes: each of ``MAX_POINTS / 2`` time buckets keeps its
minimum and its maximum, in time order (:func:`min_max_downsample`).

>>> import numpy as np
>>> t, y = min_max_downsample(np.arange(100_000.0), np.r_[np.zeros(70_000), 9.0, np.zeros(29_999)], points=1_000)
>>> len(y) <= 1_000, float(y.max())
(True, 9.0)
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_POINTS = 4_000
WIDTH_PX, PANEL_HEIGHT_PX, DPI = 1200, 260, 100
SEVERITY_COLOURS = {"info": "#1f77b4", "warning": "#ff7f0e", "critical": "#d62728"}


def min_max_downsample(t: np.ndarray, y: np.ndarray, points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` points: per time bucket, the minimum and the maximum in the order they occur (NaN skipped)."""
    keep = ~np.isnan(y)
    t, y = np.asarray(t, dtype=np.float64)[keep], np.asarray(y, dtype=np.float64)[keep]
    if len(y) <= points:
        return t, y
    bucket = np.minimum(((t - t[0]) / (t[-1] - t[0] or 1.0) * (points // 2)).astype(np.int64), points // 2 - 1)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    low = starts + np.array([np.argmin(part) for part in np.split(y, starts[1:])])
    high = starts + np.array([np.argmax(part) for part in np.split(y, starts[1:])])
    rows = np.unique(np.r_[low, high])
    return t[rows], y[rows]


@dataclass
class Series:
    """What a report plots for one series: event times (ms), input values by field, score columns, marks."""

    name: str
    ts_ms: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    threshold: float | None = None
    alerts: list[dict] = field(default_factory=list)  # ts_ms, operator, kind, severity, fields
    windows: list[tuple[int, int]] = field(default_factory=list)  # labelled spans, ms


@dataclass
class RunData:
    title: str
    series: list[Series]
    tables: list[tuple[str, list[str], list[list[str]]]]  # (caption, header, rows)


def load_run(run_dir: Path, *, threshold: float | None = None, max_series: int = 12) -> RunData:
    """The series and tables of a run directory of either kind (module docstring)."""
    if (run_dir / "scores.jsonl").exists() or (run_dir / "alerts.jsonl").exists():
        return _load_pipeline_run(run_dir, max_series)
    files = sorted(p for p in run_dir.rglob("*.csv") if p.is_file())
    if not files:
        raise ValueError(f"{run_dir}: neither scores.jsonl / alerts.jsonl (a pipeline run) nor CSV files of vigil score")
    return _load_score_files(run_dir, files[:max_series], threshold)


def _ms(stamp: str) -> int:
    return int(np.datetime64(stamp.replace("Z", ""), "ms").astype(np.int64))


def _load_pipeline_run(run_dir: Path, max_series: int) -> RunData:
    per_key: dict[str, dict] = {}
    scores_path = run_dir / "scores.jsonl"
    if scores_path.exists():
        with open(scores_path) as handle:
            for line in handle:
                record = json.loads(line)
                if record["key"] not in per_key:
                    if len(per_key) >= max_series:
                        continue
                    per_key[record["key"]] = {"ts": [], "scores": defaultdict(list), "values": defaultdict(list)}
                entry = per_key[record["key"]]
                entry["ts"].append(_ms(record["ts"]))
                for part in ("scores", "values"):
                    for name, value in record.get(part, {}).items():
                        entry[part][name].append(np.nan if value is None else value)
    alerts = []
    if (run_dir / "alerts.jsonl").exists():
        alerts = [json.loads(line) for line in (run_dir / "alerts.jsonl").read_text().splitlines() if line.strip()]
    truth = []
    if (run_dir / "truth.jsonl").exists():
        truth = [json.loads(line) for line in (run_dir / "truth.jsonl").read_text().splitlines() if line.strip()]
    keys = list(per_key)[:max_series] or sorted({a["key"] for a in alerts})[:max_series]
    series = []
    for key in keys:
        entry = per_key.get(key, {"ts": [], "scores": {}, "values": {}})
        marks = [{"ts_ms": _ms(a["ts"]), "operator": a["operator"], "kind": a["kind"], "severity": a["severity"],
                  "fields": a.get("fields") or []} for a in alerts if a["key"] == key]
        labelled = [t for t in truth if t["key"] == key]
        scores = {name: column for name, column in _columns(entry["scores"]).items() if "." not in name}
        series.append(Series(key, np.array(entry["ts"], dtype=np.int64), _columns(entry["values"]), scores, None, marks,
                             [(t["start_ms"], t["end_ms"]) for t in labelled]))
    tables = [_alert_table(alerts)]
    if (run_dir / "summary.json").exists():
        tables.append(_quality_table(json.loads((run_dir / "summary.json").read_text())))
    return RunData(f"Vigil run {run_dir}", series, [t for t in tables if t[2]])


def _columns(lists: dict[str, list]) -> dict[str, np.ndarray]:
    """The columns that hold at least one number."""
    arrays = {name: np.array(values, dtype=np.float64) for name, values in lists.items()}
    return {name: array for name, array in arrays.items() if not np.isnan(array).all()}


def _alert_table(alerts: list[dict]) -> tuple[str, list[str], list[list[str]]]:
    counts = Counter((a["operator"], a["severity"]) for a in alerts)
    severities = ["info", "warning", "critical"] + sorted({s for _, s in counts} - set(SEVERITY_COLOURS))
    rows = [[operator] + [str(counts[(operator, s)]) for s in severities] + [str(sum(counts[(operator, s)] for s in severities))]
            for operator in sorted({o for o, _ in counts})]
    return "Alerts by operator and severity", ["operator", *severities, "total"], rows


def _quality_table(summary: dict) -> tuple[str, list[str], list[list[str]]]:
    """Recall per labelled kind and precision per operator, from a demo's summary.json."""
    labelled, detected = summary.get("incidents", {}), summary.get("detected", {})
    rows = [[f"recall: {kind}", str(labelled[kind]), str(detected.get(kind, 0)), f"{summary['recall'][kind]:.3f}"]
            for kind in sorted(labelled) if kind in summary.get("recall", {})]
    rows += [[f"precision: {name}", "", "", f"{value:.3f}"] for name, value in sorted(summary.get("precision", {}).items())]
    return "Against the labels (ground truth)", ["", "labelled", "detected", "value"], rows


def _load_score_files(run_dir: Path, files: list[Path], threshold: float | None) -> RunData:
    windows_file = run_dir / "windows.json"
    windows = json.loads(windows_file.read_text()) if windows_file.exists() else {}
    series, rows = [], []
    for path in files:
        with open(path, newline="") as handle:
            table = list(csv.DictReader(handle))
        missing = {"timestamp", "value", "anomaly_score"} - set(table[0] if table else {})
        if missing:
            raise ValueError(f"{path}: not a vigil score output (no column {', '.join(sorted(missing))})")
        ts = np.array([_ms(r["timestamp"]) for r in table], dtype=np.int64)
        values = np.array([float(r["value"]) if r["value"] else np.nan for r in table])
        scores = np.array([float(r["anomaly_score"]) for r in table])
        name = str(path.relative_to(run_dir))
        spans = [(_ms(a), _ms(b)) for a, b in windows.get(name, windows.get(path.name, []))]
        detected = ts[scores >= threshold] if threshold is not None else ts[:0]
        marks = [{"ts_ms": int(t), "operator": "anomaly_score", "kind": "outlier", "severity": "critical", "fields": ["value"]}
                 for t in detected]
        series.append(Series(name, ts, {"value": values}, {"anomaly_score": scores}, threshold, marks, spans))
        hit = sum(any(a <= t <= b for t in detected) for a, b in spans)
        outside = sum(not any(a <= t <= b for a, b in spans) for t in detected)
        rows.append([name, str(len(ts)), str(len(spans)), str(len(detected)),
                     f"{hit}/{len(spans)}" if spans else "-", str(outside)])
    caption = "Detections" + (f" at threshold {threshold:g}" if threshold is not None else " (no threshold given)")
    return RunData(f"Vigil scores in {run_dir}", series,
                   [(caption, ["series", "rows", "labelled windows", "detections", "windows hit", "outside windows"], rows)])


def plot_series(series: Series):
    """A matplotlib figure, WIDTH_PX wide and PANEL_HEIGHT_PX per panel: each input field, then each score. An alert
    is marked on its operator's score and on the fields it names; drift alerts are vertical lines on every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, column, True) for name, column in series.values.items()]
    panels += [(name, column, False) for name, column in series.scores.items()]
    panels = panels or [("no scores", np.full(len(series.ts_ms), np.nan), False)]
    figure, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                                figsize=(WIDTH_PX / DPI, PANEL_HEIGHT_PX * len(panels) / DPI), dpi=DPI)
    for axis, (label, column, is_input) in zip(axes[:, 0], panels):
        t, y = min_max_downsample(series.ts_ms, column)
        axis.plot(t.astype("datetime64[ms]"), y, lw=0.7, color="#333333")
        axis.set_ylabel(label, fontsize=8)
        for start, end in series.windows:
            axis.axvspan(np.datetime64(start, "ms"), np.datetime64(end, "ms"), color="#2ca02c", alpha=0.15, lw=0)
        if not is_input and series.threshold is not None:
            axis.axhline(series.threshold, color="#d62728", ls="--", lw=0.8)
        for alert in series.alerts:
            when = np.datetime64(alert["ts_ms"], "ms")
            if alert["kind"] == "drift":
                axis.axvline(when, color="#9467bd", lw=0.8)
            elif (label in alert["fields"] if is_input else label == alert["operator"]) and len(series.ts_ms):
                row = min(int(np.searchsorted(series.ts_ms, alert["ts_ms"])), len(column) - 1)
                axis.plot(when, column[row], "v", ms=5, color=SEVERITY_COLOURS.get(alert["severity"], "k"))
        axis.tick_params(labelsize=7)
    axes[0, 0].set_title(series.name, fontsize=9, loc="left")
    height = PANEL_HEIGHT_PX * len(panels)
    figure.subplots_adjust(left=0.07, right=0.99, top=1 - 26 / height, bottom=32 / height, hspace=0.15)
    return figure


# Once the page has loaded, it records each image's decoded size on <body data-images="...">: a headless browser's
# DOM dump then shows whether every plot rendered (tests/test_report.py).
_RENDER_CHECK = ("<script>addEventListener('load',()=>{document.body.dataset.images=JSON.stringify("
                 "[...document.images].map(i=>[i.naturalWidth,i.naturalHeight,i.complete]))})</script>")


def write_report(run_dir: str | Path, *, threshold: float | None = None, max_series: int = 12) -> Path:
    """Write ``report.html`` and ``report/*.png`` into ``run_dir``; returns the HTML file."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("vigil report needs matplotlib: pip install 'vigil[plots]'") from None
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    data = load_run(run_dir, threshold=threshold, max_series=max_series)
    images_dir = run_dir / "report"
    images_dir.mkdir(exist_ok=True)
    parts = [f"<h1>{html.escape(data.title)}</h1>"]
    for caption, header, rows in data.tables:
        parts.append(f"<h2>{html.escape(caption)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                     + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                     + "</table>")
    parts.append("<h2>Series</h2><p>Shaded: labelled windows. Triangles: alerts or detections (blue info, orange warning, "
                 "red critical). Purple lines: drift alerts. Dashed: the threshold. Long series show each bucket's "
                 "minimum and maximum.</p>")
    for index, series in enumerate(data.series):
        figure = plot_series(series)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
        plt.close(figure)
        png = buffer.getvalue()
        (images_dir / f"series-{index:03d}.png").write_bytes(png)
        parts.append(f'<figure><img alt="{html.escape(series.name)}" src="data:image/png;base64,'
                     f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(series.name)}</figcaption></figure>')
    page = run_dir / "report.html"
    page.write_text("<!doctype html><html><head><meta charset=\"utf-8\"><title>" + html.escape(data.title) + "</title>"
                    "<style>body{font-family:sans-serif;margin:24px;max-width:1240px}table{border-collapse:collapse}"
                    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}td:not(:first-child){text-align:right}"
                    "figure{margin:16px 0}figcaption{font-size:12px;color:#555}</style></head><body>"
                    + "".join(parts) + _RENDER_CHECK + "</body></html>\n")
    return page
