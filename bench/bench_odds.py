"""Label-free ROC-AUC of every tabular detector on the ODDS sets in ../shared/data/odds.

    .venv/bin/python bench/bench_odds.py --epochs 100 --seeds 0,1,2,3,4 > bench/results/odds-label-free.md

Prints a Markdown table (one row per set, one column per detector, then the mean), with the command
that produced it. The protocol is pipeline.evaluate's: fixed hyper-parameters, labels used only to score.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.evaluate import DETECTORS, Protocol, evaluate, load_table  # noqa: E402

ODDS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "odds"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ODDS, help="folder of .mat files (default ../shared/data/odds)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--k", type=int, default=65)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    files = sorted(args.data.glob("*.mat"))
    if not files:
        raise SystemExit(f"no .mat files in {args.data}: the shared development data must sit beside the checkout")
    protocol = Protocol(epochs=args.epochs, k=args.k, iterations=args.iterations,
                        seeds=tuple(int(s) for s in args.seeds.split(",")))
    names = list(DETECTORS)
    print(f"Command: `{' '.join(['.venv/bin/python', 'bench/bench_odds.py', *sys.argv[1:]])}`\n")
    print("| set | rows | outliers | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    totals = dict.fromkeys(names, 0.0)
    for path in files:
        X, y = load_table(path)
        aucs = {name: evaluate(X, y, name, protocol)["roc_auc"] for name in names}
        for name, value in aucs.items():
            totals[name] += value
        print(f"| {path.stem} | {len(X)} | {int(y.sum())} | " + " | ".join(f"{aucs[n]:.3f}" for n in names) + " |", flush=True)
    print("| **mean** | | | " + " | ".join(f"**{totals[n] / len(files):.3f}**" for n in names) + " |")


if __name__ == "__main__":
    main()
