"""VUS-PR and the sliding window of :mod:`pipeline.evaluation.timeseries` against TSB-AD 1.5 (``bench/tsbad.py``,
isolated environment) on seeded random cases and on the development data: the 12 ASD servers (score: the largest
per-metric z-score against the train part) and 10 labelled NAB series (score: the robust z-score against the first
15 %), each with TSB-AD's own window for that series.

    .venv/bin/python -m bench.tsbad_crosscheck        # writes bench/results/tsbad_crosscheck.md; about 2 minutes
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from bench.pate_crosscheck import planted_events
from bench.tsbad import REFERENCE, STACK, acf_reference, find_length_reference, vus_pr_reference
from pipeline.evaluation.timeseries import autocorrelation, runs, sliding_window, vus, vus_pr

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "tsbad_crosscheck.md"
TOLERANCE = 1e-6


def random_cases(count: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """Series of 200 to 1,500 points with 1 to 6 labelled events (some at the very start or end, some a few points
    apart); scores noisy, rising near some events, every third one rounded to tenths (ties); windows 0 to 200."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        labels, score = planted_events(rng)
        n = len(labels)
        if i % 5 == 1:
            labels[:int(rng.integers(1, 20))] = 1
        if i % 5 == 2:
            labels[n - int(rng.integers(1, 20)):] = 1
        if i % 5 == 3:  # a second event just after the first, closer than most windows
            end = int(runs(labels)[0, 1])
            labels[min(n - 1, end + int(rng.integers(2, 12))):min(n, end + 20)] = 1
        if i % 3 == 0:
            score = np.round(score, 1)
        window = int(rng.choice([0, 1, 2, 3, 5, 10, 17, 25, 50, 100, 125, 200]))
        out.append((f"random {i}", labels, score, window))
    return out


def asd_cases(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, labels, score, first channel) per server; a metric constant in train is scaled by 1."""
    out = []
    for server in range(1, 13):
        train = np.loadtxt(folder / f"omi-{server}_train.csv", delimiter=",", skiprows=1)
        test = np.loadtxt(folder / f"omi-{server}_test.csv", delimiter=",", skiprows=1)
        values, labels = test[:, :-1], test[:, -1].astype(np.int64)
        spread = train.std(axis=0)
        score = (np.abs(values - train.mean(axis=0)) / np.where(spread > 0, spread, 1.0)).max(axis=1)
        out.append((f"ASD omi-{server}", labels, score, values[:, 0]))
    return out


def nab_cases(folder: Path, count: int = 10) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, labels, score, values) for ``count`` labelled series spread over the sorted list; labels are the rows
    inside the combined windows; the robust scale falls back to the standard deviation, then 1, where it is 0."""
    windows = json.loads((folder / "labels" / "combined_windows.json").read_text())
    labelled = sorted(name for name, spans in windows.items() if spans)
    out = []
    for name in [labelled[i] for i in np.unique(np.linspace(0, len(labelled) - 1, count).round().astype(int))]:
        rows = np.genfromtxt(folder / "data" / name, delimiter=",", skip_header=1, dtype=None, encoding="utf-8")
        stamps = np.array([row[0] for row in rows], dtype="datetime64[s]")
        values = np.array([row[1] for row in rows], dtype=np.float64)
        labels = np.zeros(len(values), dtype=np.int64)
        for start, end in windows[name]:
            labels[(stamps >= np.datetime64(start[:19])) & (stamps <= np.datetime64(end[:19]))] = 1
        head = values[:max(1, int(0.15 * len(values)))]
        centre = np.median(head)
        scale = 1.4826 * np.median(np.abs(head - centre)) or float(np.std(head)) or 1.0
        out.append((f"NAB {name}", labels, np.abs(values - centre) / scale, values))
    return out


def _gap(ours: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute difference; infinite if the lengths or the NaNs (a constant series) differ."""
    if ours.shape != reference.shape or not np.array_equal(np.isnan(ours), np.isnan(reference)):
        return float("inf")
    finite = ~np.isnan(ours)
    return float(np.abs(ours[finite] - reference[finite]).max(initial=0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (asd/, nab/)")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    for part in ("asd", "nab"):
        if not (args.data / part).is_dir():
            raise SystemExit(f"{args.data / part} is missing: the cross-check needs the shared ASD and NAB data")
    started = time.time()
    real = asd_cases(args.data / "asd") + nab_cases(args.data / "nab")
    series = [values for *_, values in real]
    reference_windows = {rank: find_length_reference(series, rank) for rank in (1, 2, 3)}
    our_windows = {rank: [sliding_window(values, rank) for values in series] for rank in (1, 2, 3)}
    acf_gaps = np.array([_gap(autocorrelation(values[:20000], 400), reference)
                         for values, reference in zip(series, acf_reference([values[:20000] for values in series]))])
    cases = random_cases(args.count, args.seed) + [(name, labels, score, window) for (name, labels, score, _), window
                                                   in zip(real, reference_windows[1])]
    reference = np.array(vus_pr_reference([(labels, score, window) for _, labels, score, window in cases]))
    ours = np.array([vus_pr(labels, score, window) for _, labels, score, window in cases])
    old = np.array([vus(labels, score, window)[1] for _, labels, score, window in cases])
    ours_gap, old_gap = np.abs(ours - reference), np.abs(old - reference)
    window_misses = {rank: sum(a != b for a, b in zip(our_windows[rank], reference_windows[rank])) for rank in (1, 2, 3)}
    is_random = np.array([name.startswith("random") for name, *_ in cases])

    lines = [f"# VUS-PR and the sliding window against TSB-AD {REFERENCE.split('==')[1]}", "",
             "`.venv/bin/python -m bench.tsbad_crosscheck` "
             f"({args.count} seeded random cases, seed {args.seed}; {len(real)} real series; {time.time() - started:.0f} s)",
             "",
             f"Reference: PyPI `{REFERENCE}` in `.tsbad-env` (Python {platform.python_version()}, "
             f"{', '.join(STACK[:6])}): `generate_curve(labels, score, window, version='opt', thre=250)` "
             "(what `get_metrics(...)['VUS-PR']` runs) and `find_length_rank(values, rank)`; Vigil with numpy "
             f"{np.__version__}.", "",
             "| check | cases | largest absolute difference | within 1e-6 |", "|---|---|---|---|"]
    for label, gap in (("`vus_pr` (new, TSB-AD 1.5's VUS-PR)", ours_gap), ("`vus(...)[1]` (TSB-UAD's VUS-PR)", old_gap)):
        for kind, mask in (("random", is_random), ("ASD + NAB", ~is_random)):
            lines.append(f"| {label}, {kind} | {int(mask.sum())} | {gap[mask].max():.2e} | "
                         f"{int((gap[mask] <= TOLERANCE).sum())} |")
    lines.append(f"| `autocorrelation` vs statsmodels `acf(nlags=400, fft=True)` | {len(series)} | {acf_gaps.max():.2e} | "
                 f"{int((acf_gaps <= TOLERANCE).sum())} |")
    for rank in (1, 2, 3):
        lines.append(f"| `sliding_window(values, {rank})` vs `find_length_rank` (equal) | {len(series)} | "
                     f"{window_misses[rank]} differ | {len(series) - window_misses[rank]} |")
    lines += ["", "Real-data cases (window: TSB-AD's `find_length_rank(first channel, rank=1)`; Vigil's "
              "`sliding_window` in brackets when it differs):", "",
              "| case | points | events | window | TSB-AD VUS-PR | `vus_pr` | difference | `vus(...)[1]` | difference |",
              "|---|---|---|---|---|---|---|---|---|"]
    offset = int(is_random.sum())
    for i, (name, labels, _, window) in enumerate(cases[offset:]):
        k = offset + i
        mine = our_windows[1][i]
        shown = f"{window}" if mine == window else f"{window} ({mine})"
        lines.append(f"| {name} | {len(labels)} | {len(runs(labels))} | {shown} | {reference[k]:.6f} | {ours[k]:.6f} | "
                     f"{ours_gap[k]:.1e} | {old[k]:.6f} | {old_gap[k]:.1e} |")
    lines += ["", "Why `vus` differs: it follows TSB-UAD's `get_range_vus_roc` (widths 0 .. 2·window, trapezoidal PR "
              "area, expected positives from the whole soft labels); TSB-AD 1.5's `RangeAUC_volume_opt` uses widths "
              "0 .. window, a step PR sum, expected positives from the predicted part of the widening only, and widens "
              "the right side from the event's end + 1. `vus_pr` follows the latter (its docstring)."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    failures = int((ours_gap > TOLERANCE).sum()) + sum(window_misses.values()) + int((acf_gaps > TOLERANCE).sum())
    if failures:
        raise SystemExit(f"{failures} checks differ from TSB-AD beyond {TOLERANCE}")


if __name__ == "__main__":
    main()
