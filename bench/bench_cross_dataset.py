"""Vigil's honest cross-dataset evaluation, full setting: every default detector and baseline on ASD (multivariate and
per metric), NAB and the demo stream, plus TSB-AD's own POLY, Sub-PCA and PCA as optimistic anchors
(:mod:`bench.tsbad`, an isolated environment); writes the results page and every number.

    .venv/bin/python bench/bench_cross_dataset.py   # about 10 minutes on 2 cores; --no-anchors without TSB-AD

The same code as ``vigil evaluate cross-dataset`` (:mod:`pipeline.evaluation.cross_dataset`), with the anchors added.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.demo.synthetic import FIELDS, SyntheticStream  # noqa: E402
from pipeline.evaluation.cross_dataset import (DATASETS, DEMO_ENTITIES, DEMO_EVENTS, DEMO_SEED, Dataset,  # noqa: E402
                                               Detector, Scores, Unavailable, default_detectors, evaluate,
                                               load_datasets, plain, render)

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PCA_WINDOW = 100  # run_PCA's default, what TSB-AD's multivariate benchmark uses


def anchors() -> tuple[list[Detector], list[str]]:
    """TSB-AD's POLY and Sub-PCA on the univariate datasets and PCA on the multivariate ones, when bench/tsbad.py is
    here (imported lazily: it is not part of Vigil)."""
    try:
        from bench.tsbad import anchor_scores_many
    except ImportError as error:
        return [], [f"anchors skipped: bench/tsbad.py could not be imported ({error})"]
    from pipeline.evaluation.timeseries import sliding_window

    notes: list[str] = []

    def scored(method: str, cases: list) -> list[Scores]:
        """TSB-AD's scores; a constant test series (NAB's art_flatline), where TSB-AD's PCA finds no feature and
        fails, scores 0 throughout without it."""
        varied = [i for i, (_, test, _) in enumerate(cases) if np.ptp(test) > 0]
        scores = [np.zeros(len(test)) for _, test, _ in cases]
        try:
            for i, score in zip(varied, anchor_scores_many(method, [cases[i] for i in varied])):
                scores[i] = score
        except (RuntimeError, OSError, ValueError) as error:  # the isolated environment, or TSB-AD inside it
            raise Unavailable(str(error).strip().splitlines()[-1]) from error
        if len(varied) < len(cases):
            notes.append(f"{method}: {len(cases) - len(varied)} constant series scored 0 without TSB-AD")
        return [_scores(score) for score in scores]

    def univariate(method: str):
        return lambda dataset: scored(method, [(None, s.test[:, 0], sliding_window(s.test[:, 0])) for s in dataset.series])

    def pca(dataset: Dataset) -> list[Scores]:
        return scored("PCA", [(s.reference, s.test, PCA_WINDOW) for s in dataset.series])

    is_univariate = lambda dataset: dataset.univariate  # noqa: E731
    return [
        Detector("POLY", "anchor", univariate("POLY"), "TSB-AD 1.5's POLY (degree-4 polynomial fits over windows of "
                 "the series' period), fitted on the whole test series it scores; univariate datasets",
                 is_univariate),
        Detector("Sub-PCA", "anchor", univariate("Sub-PCA"), "TSB-AD 1.5's Sub-PCA (PCA of the subsequences of the "
                 "series' period, all components), fitted on the whole test series it scores; univariate datasets",
                 is_univariate),
        Detector("PCA", "anchor", pca, f"TSB-AD 1.5's PCA (subsequences of {PCA_WINDOW} rows, components explaining 25 % "
                 "of the variance) fitted on the train part (demo: each entity's first 1,440 rows) and scoring the "
                 "test part; multivariate datasets", lambda dataset: not dataset.univariate),
    ], notes


def _scores(score) -> Scores:
    score = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=0.0)
    return Scores(score, score)


def live_demo(seed: int = 7, events: int = 200_000) -> str:
    """The default pipeline on the demo stream through ``vigil demo`` (Kafka-free, the live dataflow): the outlier
    operator's recall on spikes and level shifts and its alerts' precision, from the run's summary."""
    with tempfile.TemporaryDirectory() as directory:
        subprocess.run([str(Path(sys.executable).parent / "vigil"), "demo", "--seed", str(seed), "--events", str(events),
                        "--run-dir", directory, "--no-metrics", "--no-progress"], check=True, capture_output=True)
        summary = json.loads((Path(directory) / "summary.json").read_text())
    recall, detected, injected = summary["recall"], summary["detected"], summary["incidents"]
    return "\n".join([
        "## The default in the live pipeline: `vigil demo`", "",
        f"`vigil demo --seed {seed} --events {events}` (the built-in configuration, whose `outlier` operator is the "
        "default `baseline` on the demo's four fields), from the run's `summary.json`:", "",
        "| figure | value |", "|---|---|",
        f"| recall on spikes and level shifts | {recall['spike+level_shift']:.3f} |",
        *(f"| recall on {kind.replace('_', ' ')}s | {recall[kind]:.3f} ({detected[kind]} of {injected[kind]}) |"
          for kind in ("spike", "level_shift", "drift")),
        f"| precision of the outlier alerts | {summary['precision']['outlier']:.3f} "
        f"({sum(summary['alerts']['outlier'].values())} alerts) |", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="the folder holding asd/ and nab/")
    parser.add_argument("--demo-events", type=int, default=DEMO_EVENTS)
    parser.add_argument("--no-anchors", action="store_true", help="leave TSB-AD's detectors out")
    args = parser.parse_args()
    started = time.perf_counter()
    stream = SyntheticStream(events=args.demo_events, entities=DEMO_ENTITIES, seed=DEMO_SEED, bad_rate=0.0)
    datasets = load_datasets(args.data, DATASETS, stream, FIELDS)
    extra, notes = ([], ["anchors left out (--no-anchors)"]) if args.no_anchors else anchors()
    detectors = default_detectors() + extra
    from operators.registry import OPERATOR_TYPES

    if "baseline" not in OPERATOR_TYPES:
        notes.append("the `baseline` operator is not registered in this checkout: it is not in the tables")
    for note in notes:
        print(note, file=sys.stderr)
    results = evaluate(datasets, detectors, progress=lambda line: print(line, file=sys.stderr, flush=True))
    elapsed = time.perf_counter() - started
    hst_seconds = results["seconds"].get("river_hst", {}).get("asd_univariate")
    if hst_seconds is not None:
        notes.append(f"river_hst ran on all {results['datasets']['asd_univariate']['series']} asd_univariate series "
                     f"({hst_seconds:.0f} s): no sample was needed")
    notes.append(f"the whole run took {elapsed / 60:.1f} minutes (loading, scoring, metrics and the TSB-AD "
                 "environment's starts) on this machine's 2 shared cores")
    results["notes"] = notes + results["notes"]
    results["elapsed_seconds"] = elapsed
    command = "python bench/bench_cross_dataset.py" + (" --no-anchors" if args.no_anchors else "")
    page = render(results, [f".venv/bin/{command}   # writes bench/results/cross-dataset.md and .json",
                            "vigil evaluate cross-dataset --data ../shared/data   # the same without the anchors, "
                            "tables to stdout"])
    (RESULTS / "cross-dataset.md").write_text(page.rstrip("\n") + "\n\n" + live_demo())
    (RESULTS / "cross-dataset.json").write_text(json.dumps(plain(results), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RESULTS / 'cross-dataset.md'} and .json in {elapsed:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
