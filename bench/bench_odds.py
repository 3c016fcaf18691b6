"""Label-free ROC-AUC of every tabular detector on the ODDS sets in ../shared/data/odds.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_odds.py --epochs 1000 > bench/results/odds-label-free.md

Prints a Markdown table (one row per set, one column per detector, then the mean), with the command
that produced it and the per-set runtime. The protocol is pipeline.evaluation.tabular's label-free one: stratified
50/25/25 split (seed 42), z-score with the train ∪ valid statistics, every detector learns train ∪ valid
and scores the test part; fixed hyper-parameters (k, m, last epoch); labels used only for the metrics;
mean over the seeds. One PAE per seed serves both ``apre`` and ``apre-mss``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pipeline.evaluation.tabular import DEFAULT_EPOCHS, DETECTORS, Protocol, evaluate_label_free, load_table  # noqa: E402

ODDS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "odds"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ODDS, help="folder of .mat files (default ../shared/data/odds)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--k", type=int, default=65)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--metric", default="roc_auc", choices=["roc_auc", "average_precision"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(args.data.glob("*.mat"))
    if not files:
        raise SystemExit(f"no .mat files in {args.data}: the shared development data must sit beside the checkout")
    protocol = Protocol(epochs=args.epochs, k=args.k, iterations=args.iterations,
                        seeds=tuple(int(s) for s in args.seeds.split(",")))
    names = list(DETECTORS)
    print(f"Command: `{' '.join(['OMP_NUM_THREADS=1', '.venv/bin/python', 'bench/bench_odds.py', *sys.argv[1:]])}`\n")
    print(f"Label-free protocol: split 50/25/25 stratified (seed {protocol.split_seed}), learn train+valid, score test; "
          f"{protocol.epochs} epochs (last), k = {protocol.k}, m = {protocol.iterations}, seeds {args.seeds}; "
          f"test {args.metric.replace('_', '-')}.\n")
    print("| set | rows | outliers (test) | " + " | ".join(names) + " | seconds |")
    print("|---|---|---|" + "---|" * len(names) + "---|")
    totals = dict.fromkeys(names, 0.0)
    started = time.perf_counter()
    for path in files:
        X, y = load_table(path)
        t0 = time.perf_counter()
        results = evaluate_label_free(X, y, names, protocol)
        values = {name: results[name][args.metric] for name in names}
        for name, value in values.items():
            totals[name] += value
        test = results[names[0]]["split"]
        print(f"| {path.stem} | {len(X)} | {int(y.sum())} ({test['test_outliers']}/{test['test']}) | "
              + " | ".join(f"{values[n]:.3f}" for n in names) + f" | {time.perf_counter() - t0:.0f} |", flush=True)
    print("| **mean** | | | " + " | ".join(f"**{totals[n] / len(files):.3f}**" for n in names)
          + f" | {time.perf_counter() - started:.0f} |")


if __name__ == "__main__":
    main()
