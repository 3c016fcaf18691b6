"""`vigil report`: plots that keep spikes, and reports of both kinds of run directory rendered by headless Chromium."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from conftest import vigil
from pipeline.report import DPI, PANEL_HEIGHT_PX, WIDTH_PX, min_max_downsample

NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI needs chromium for the report tests (make test installs it with apt-get)")
browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (make test installs it where it can)")


def test_min_max_downsampling_keeps_every_bucket_extreme():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200_000)
    y[[1234, 150_000]] = [40.0, -35.0]
    t, kept = min_max_downsample(np.arange(len(y)) * 1000, y, points=2000)
    assert len(kept) <= 2000 and kept.max() == 40.0 and kept.min() == -35.0
    assert np.all(np.diff(t) > 0)  # still in time order


def render(page: Path, tmp_path: Path) -> tuple[list, np.ndarray, str]:
    """The decoded image sizes the page recorded, a screenshot, and the browser's log."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)
    recorded = dom.stdout.split('data-images="', 1)[1].split('"', 1)[0].replace("&quot;", '"')
    return json.loads(recorded), image.imread(shot), dom.stderr


def assert_rendered(sizes: list, shot: np.ndarray, log: str, expected: list[tuple[int, int]]) -> None:
    assert [(w, h) for w, h, complete in sizes if complete] == expected
    assert "CONSOLE" not in log and "Uncaught" not in log  # no console message, error or otherwise
    ink = (shot[..., :3].mean(axis=2) < 0.5).mean(axis=1)  # share of dark pixels per screen row
    assert (ink > 0.01).sum() > 200  # text, tables and plot lines, not a blank page


@browser
def test_report_of_vigil_score_outputs_shows_values_scores_threshold_and_windows(tmp_path):
    run = tmp_path / "scored"
    run.mkdir()
    name = "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv"
    vigil("score", "--input", str(NAB / "data" / name), "--timestamp-column", "timestamp", "--value-column", "value",
          "--output", str(run / "cpu.csv"))
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())[name]
    (run / "windows.json").write_text(json.dumps({"cpu.csv": windows}))
    page = Path(vigil("report", str(run), "--threshold", "0.9").stdout.strip())
    assert page == run / "report.html" and (run / "report" / "series-000.png").exists()
    text = page.read_text()
    assert "windows hit" in text and "<td>2/2</td>" in text  # both labelled windows detected at 0.9
    sizes, shot, log = render(page, tmp_path)
    assert_rendered(sizes, shot, log, [(WIDTH_PX, 2 * PANEL_HEIGHT_PX)])  # value and score panels
    png = image.imread(run / "report" / "series-000.png")
    assert png.shape[:2] == (2 * PANEL_HEIGHT_PX, WIDTH_PX) and png[..., :3].std() > 0.05 and DPI == 100


@browser
def test_report_of_a_demo_run_has_alert_and_label_tables_and_a_plot_per_entity(tmp_path):
    vigil("demo", "--run-dir", str(tmp_path), "--no-metrics", "--no-progress", "--events", "6000", "--entities", "3")
    page = Path(vigil("report", str(tmp_path), "--max-series", "2").stdout.strip())
    text = page.read_text()
    assert "Alerts by operator and severity" in text and "recall: spike" in text and "precision: outlier" in text
    first = next(json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines())
    assert set(first["values"]) >= {"cpu", "latency_ms", "requests", "error_rate", "ecg"}  # what the panels plot
    sizes, shot, log = render(page, tmp_path)
    # A panel per input field (cpu, latency_ms, requests, error_rate, ecg) and per score column (outlier, beats).
    assert len(sizes) == 2 and all(w == WIDTH_PX and h == 7 * PANEL_HEIGHT_PX for w, h, _ in sizes)
    assert_rendered(sizes, shot, log, [(w, h) for w, h, _ in sizes])
