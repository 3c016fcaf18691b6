"""`vigil score` throughput: points per second per core of each detector on the NAB development series, one process,
start-up excluded (the issue's bar: at least 20,000 for the default detector): the detector alone (the operator chain
in batches), and file to file (reading each CSV, scoring it, writing the scores CSV, as ``vigil score`` does).

    .venv/bin/python bench/bench_score.py > bench/results/score.md
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.evaluation.nab import PROFILES, best_score, load_corpus  # noqa: E402
from pipeline.evaluation.score import DETECTORS, SeriesTable, read_series, score_series, write_scores  # noqa: E402

NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"


def main() -> None:
    corpus = load_corpus(NAB / "data", NAB / "labels" / "combined_windows.json")
    tables = [SeriesTable([str(t) for t in s.timestamps], s.timestamps.astype("datetime64[ms]").astype(np.int64), s.values,
                          np.full(len(s.values), "series", dtype=object)) for s in corpus]
    points = sum(len(s.values) for s in corpus)
    print(f"# `vigil score` throughput and NAB scores ({len(corpus)} development series, {points:,} points)\n")
    print("| detector | points/s (one core), detector | points/s, file to file | NAB standard | reward low FP | reward low FN |")
    print("|---|---|---|---|---|---|")
    for detector in DETECTORS:
        score_series(tables[0], detector)  # warm-up: compilation and imports
        start = time.perf_counter()
        scores = [score_series(table, detector, detection=True) for table in tables]
        rate = points / (time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            for series in corpus:
                table = read_series(NAB / "data" / series.name, "timestamp", "value")
                write_scores(Path(out) / "scores.csv", table, score_series(table, detector))
            end_to_end = points / (time.perf_counter() - start)
        nab = [best_score(corpus, scores, profile)[1] for profile in PROFILES]
        print(f"| {detector} | {rate:,.0f} | {end_to_end:,.0f} | " + " | ".join(f"{value:.2f}" for value in nab) + " |")


if __name__ == "__main__":
    main()
