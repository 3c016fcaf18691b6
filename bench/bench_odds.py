"""Label-free ROC-AUC of every tabular detector on the ODDS sets in ../shared/data/odds, under either protocol.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_odds.py --epochs 1000 > bench/results/odds-label-free.md
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_odds.py --protocol prequential > bench/results/odds-prequential.md

Prints a Markdown table (one row per set, one column per detector, then the mean), with the command
that produced it and the per-set runtime. ``split`` is pipeline.evaluation.tabular's label-free protocol: stratified
50/25/25 split (seed 42), z-score with the train ∪ valid statistics, every detector learns train ∪ valid
and scores the test part; fixed hyper-parameters (k, m, last epoch); labels used only for the metrics;
mean over the seeds. One PAE per seed serves both ``apre`` and ``apre-mss``. ``prequential``: rows in a seeded order,
each scored before it is learned, metrics after the first 20 % (``tabular.Prequential``), mean over three orders.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pipeline.evaluation.tabular import (  # noqa: E402
    DEFAULT_EPOCHS,
    DETECTORS,
    PREQUENTIAL,
    Prequential,
    Protocol,
    evaluate_label_free,
    evaluate_prequential,
    load_table,
)

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
    parser.add_argument("--protocol", default="split", choices=["split", "prequential"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(args.data.glob("*.mat"))
    if not files:
        raise SystemExit(f"no .mat files in {args.data}: the shared development data must sit beside the checkout")
    protocol = Protocol(epochs=args.epochs, k=args.k, iterations=args.iterations,
                        seeds=tuple(int(s) for s in args.seeds.split(",")))
    prequential = Prequential()
    names = list(DETECTORS if args.protocol == "split" else PREQUENTIAL)
    print(f"Command: `{' '.join(['OMP_NUM_THREADS=1', '.venv/bin/python', 'bench/bench_odds.py', *sys.argv[1:]])}`\n")
    if args.protocol == "split":
        print(f"Label-free protocol: split 50/25/25 stratified (seed {protocol.split_seed}), learn train+valid, score "
              f"test; {protocol.epochs} epochs (last), k = {protocol.k}, m = {protocol.iterations}, seeds {args.seeds}; "
              f"test {args.metric.replace('_', '-')}.\n")
    else:
        print(f"Prequential protocol: rows in seeded orders {prequential.seeds}, each scored before it is learned, "
              f"{args.metric.replace('_', '-')} over the rows after the first {prequential.warmup_share:.0%}; "
              f"iforest refit every {prequential.refit_every} rows on the last {prequential.window}.\n")
    scored = "outliers (test)" if args.protocol == "split" else "outliers (scored)"
    print(f"| set | rows | {scored} | " + " | ".join(names) + " | seconds |")
    print("|---|---|---|" + "---|" * len(names) + "---|")
    totals = dict.fromkeys(names, 0.0)
    started = time.perf_counter()
    for path in files:
        X, y = load_table(path)
        t0 = time.perf_counter()
        if args.protocol == "split":
            results = evaluate_label_free(X, y, names, protocol)
            test = results[names[0]]["split"]
            scored = f"{test['test_outliers']}/{test['test']}"
        else:
            results = evaluate_prequential(X, y, names, prequential)
            scored = f"after {results[names[0]]['warmup_rows']} rows"
        values = {name: results[name][args.metric] for name in names}
        for name, value in values.items():
            totals[name] += value
        print(f"| {path.stem} | {len(X)} | {int(y.sum())} ({scored}) | "
              + " | ".join(f"{values[n]:.3f}" for n in names) + f" | {time.perf_counter() - t0:.0f} |", flush=True)
    print("| **mean** | | | " + " | ".join(f"**{totals[n] / len(files):.3f}**" for n in names)
          + f" | {time.perf_counter() - started:.0f} |")


if __name__ == "__main__":
    main()
