"""Differential privacy under continual observation: the research note's tests T1 and T3-T6 at full size.

* **T1**: per-step variance of the Gaussian counters on an all-zero stream, T = 65,536, ρ = 0.5, against the closed
  forms (mean_t Var: binary 136.0, online Honaker 74.8, smooth 100.0, square root 19.66; square root at t = T: 21.12).
* **T3**: the ε-DP Laplace tree at T = 1,024, ε = 1: Var at t = 1,023 (2,420), mean Var (1,210), and the share of runs
  whose maximum error stays within 330.4.
* **T4**: a black-box audit of the Laplace tree: T = 64, ε = 1, neighbours 0^T and e_1, event "every ŝ_(2^j) ≥ 1":
  P(e_1) / P(0^T) is exactly e^ε for a correct tree, so the Clopper-Pearson interval of ε̂ must contain 1, and planted
  bugs (half the noise: ε = 2; one level too few in the noise scale: ε = 7/6) must be flagged (interval above 1).
  Runs go through the implementation's own d-dimensional tree (d independent counters in one call).
* **T5**: the sparse-vector MaxSum and SumSelect at T = 10^6, d = 50, ε = 1, δ = 1e-6, β = 0.05: updates within the
  cap, maximum error within the bound in at least 95 % of runs, on independent and staircase streams.
* **T6**: at T = 2^16, the regime rule picks counter-max for d ∈ {16, 64, 256}; counter-max's ℓ∞ noise (its MaxSum
  error) under its bound.

    .venv/bin/python bench/bench_privacy.py > bench/results/privacy.md     # about 15 minutes
    .venv/bin/python bench/bench_privacy.py --small --json out.json         # a quick pass (CI)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.discrete_noise import DiscreteLaplace, RandomWords  # noqa: E402
from operators.privacy import continual_counter, max_sum, sum_select  # noqa: E402
from operators.privacy.accounting import pure  # noqa: E402
from operators.privacy.counters import BinaryTreeCounter  # noqa: E402
from operators.privacy.selection import counter_bound  # noqa: E402

CLOSED = {"binary-gaussian": (136.0, 272.0), "honaker": (74.8, 149.6), "smooth": (100.0, 100.0), "sqrt": (19.66, 21.12)}


def t1(horizon: int, runs: int) -> list[dict]:
    rows = []
    for mechanism, (mean_closed, max_closed) in CLOSED.items():
        start = time.perf_counter()
        square = np.zeros(horizon)
        for seed in range(runs):
            square += continual_counter(mechanism, horizon, rho=0.5, seed=seed).update_many(np.zeros(horizon)) ** 2
        empirical = square / runs
        counter = continual_counter(mechanism, horizon, rho=0.5, seed=0)
        exact = np.array([counter.variance(t) for t in range(1, horizon + 1)])
        rows.append({"mechanism": mechanism, "runs": runs, "mean_var": float(empirical.mean()),
                     "mean_var_exact": float(exact.mean()), "max_var_exact": float(exact.max()),
                     # the research note's closed forms are for T = 2^16
                     "mean_var_closed": mean_closed if horizon == 65_536 else None,
                     "max_var_closed": max_closed if horizon == 65_536 else None,
                     "seconds": round(time.perf_counter() - start, 1)})
    return rows


def laplace_tree(horizon: int, epsilon: float, runs: int, *, levels: int | None = None, noise_factor: float = 1.0,
                 seed: int = 0) -> BinaryTreeCounter:
    """``runs`` independent Laplace trees in one d-dimensional counter; ``levels`` and ``noise_factor`` plant bugs."""
    scale = (levels or horizon.bit_length()) / epsilon * noise_factor
    return BinaryTreeCounter(horizon, pure(epsilon), 1, DiscreteLaplace(scale, RandomWords(seed)), dimensions=runs)


def t3(runs: int) -> dict:
    releases = laplace_tree(1024, 1.0, runs).update_many(np.zeros((1024, runs), dtype=np.int64))
    return {"runs": runs, "var_1023": float((releases[1022] ** 2).mean()), "mean_var": float((releases ** 2).mean()),
            "within_330_4": float((np.abs(releases).max(axis=0) <= 330.4).mean())}


def audit(runs: int, chunk: int = 200_000, **bug) -> dict:
    """ε̂ = ln P(E | e_1) / P(E | 0^T) with a 99.9 % Clopper-Pearson interval (each side at 99.95 %)."""
    hits = {"zero": 0, "impulse": 0}
    powers = [2 ** j - 1 for j in range(7)]  # t = 1, 2, 4, ..., 64 (0-based rows)
    for part, start in enumerate(range(0, runs, chunk)):
        n = min(chunk, runs - start)
        for side, first in (("zero", 0), ("impulse", 1)):
            rows = np.zeros((64, n), dtype=np.int64)
            rows[0] = first
            releases = laplace_tree(64, 1.0, n, seed=2 * part + first, **bug).update_many(rows)
            hits[side] += int((releases[powers] >= 1).all(axis=0).sum())
    alpha = 0.0005
    low = {s: stats.beta.ppf(alpha, k, runs - k + 1) if k else 0.0 for s, k in hits.items()}
    high = {s: stats.beta.ppf(1 - alpha, k + 1, runs - k) for s, k in hits.items()}
    estimate = math.log(hits["impulse"] / hits["zero"])
    return {"runs_per_side": runs, "hits": hits, "epsilon_hat": estimate,
            "interval": [math.log(low["impulse"] / high["zero"]), math.log(high["impulse"] / low["zero"])]}


def t5(horizon: int, runs: int) -> list[dict]:
    rows = []
    for select in (False, True):
        for stream in ("independent", "staircase"):
            worst, updates, bound, cap = [], [], 0.0, 0
            for seed in range(runs):
                rng = np.random.default_rng(seed)
                data = (rng.random((horizon, 50)) < rng.uniform(0.05, 0.6, 50)).astype(np.int64)
                if stream == "staircase":
                    data[:, int(rng.integers(50))] = 1
                selector = (sum_select if select else max_sum)(horizon, 50, epsilon=1.0, delta=1e-6, algorithm="svt",
                                                               seed=seed)
                out = selector.update_many(data)
                sums = np.cumsum(data, axis=0)
                best = sums.max(axis=1)
                error = best - sums[np.arange(horizon), out.astype(int)] if select else np.abs(out - best)
                worst.append(float(error.max()))
                updates.append(selector.updates)
                bound, cap = selector.error_bound, selector.svt["cap"]
            rows.append({"problem": "SumSelect" if select else "MaxSum", "stream": stream, "runs": runs, "cap": cap,
                         "max_updates": max(updates), "bound": round(bound), "median_max_error": float(np.median(worst)),
                         "within_bound": float(np.mean(np.array(worst) <= bound))})
    return rows


def t6(horizon: int, runs: dict[int, int]) -> list[dict]:
    rows = []
    for d, n in runs.items():
        worst = [float(np.abs(max_sum(horizon, d, epsilon=1.0, delta=1e-6, algorithm="counter", seed=s)
                              .counter.update_many(np.zeros((horizon, d), dtype=np.int64))).max()) for s in range(n)]
        bound = counter_bound(horizon, d, 1.0, 1e-6)
        rows.append({"d": d, "runs": n, "algorithm": max_sum(horizon, d, epsilon=1.0, delta=1e-6).algorithm,
                     "median_linf_noise": float(np.median(worst)), "bound": round(bound),
                     "within_bound": float(np.mean(np.array(worst) <= bound))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick pass at reduced sizes (CI)")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args()
    small = args.small
    results = {
        "t1": t1(4096 if small else 65_536, 20 if small else 300),
        "t3": t3(2000 if small else 5000),
        "t4": {"correct": audit(200_000 if small else 1_000_000),
               "half_noise": audit(200_000 if small else 1_000_000, noise_factor=0.5),
               **({} if small else {"one_level_too_few": audit(2_000_000, levels=6)})},
        "t5": t5(20_000 if small else 1_000_000, 5 if small else 40),
        "t6": t6(4096 if small else 65_536, {16: 5, 64: 3} if small else {16: 20, 64: 10, 256: 4}),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(report(results, small))


def report(r: dict, small: bool) -> str:
    horizon = "4,096" if small else "65,536"
    lines = [f"# Differential privacy: tests T1, T3-T6{' (small pass)' if small else ''}", "",
             f"T1: all-zero stream, T = {horizon}, ρ = 0.5.", "",
             "| counter | runs | mean Var (empirical) | mean Var (exact) | closed form | max Var (exact) | closed form |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {x['mechanism']} | {x['runs']} | {x['mean_var']:.2f} | {x['mean_var_exact']:.2f} | "
              f"{x['mean_var_closed'] or '-'} | {x['max_var_exact']:.2f} | {x['max_var_closed'] or '-'} |" for x in r["t1"]]
    t3 = r["t3"]
    lines += ["", f"Laplace tree, T = 1,024, ε = 1, {t3['runs']} runs: Var at t = 1,023 {t3['var_1023']:.0f} (closed form "
                  f"2,420), mean Var {t3['mean_var']:.0f} (1,210), runs with max error ≤ 330.4: {t3['within_330_4']:.1%}.",
              "", "| audit (T = 64, ε = 1) | runs per side | hits (0^T, e_1) | ε̂ | 99.9 % interval | verdict |",
              "|---|---|---|---|---|---|"]
    for name, a in r["t4"].items():
        low, high = a["interval"]
        verdict = "consistent with ε = 1" if low <= 1.0 <= high else ("flagged: ε > 1" if low > 1.0 else "below 1")
        lines.append(f"| {name} | {a['runs_per_side']:,} | {a['hits']['zero']}, {a['hits']['impulse']} | "
                     f"{a['epsilon_hat']:.3f} | [{low:.3f}, {high:.3f}] | {verdict} |")
    lines += ["", "| SVT | stream | runs | cap | most updates | bound | median max error | within bound |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {x['problem']} | {x['stream']} | {x['runs']} | {x['cap']} | {x['max_updates']} | {x['bound']:,} | "
              f"{x['median_max_error']:,.0f} | {x['within_bound']:.0%} |" for x in r["t5"]]
    lines += ["", "| counter-max, d | runs | rule picks | median ℓ∞ noise | bound | within bound |", "|---|---|---|---|---|---|"]
    lines += [f"| {x['d']} | {x['runs']} | {x['algorithm']} | {x['median_linf_noise']:,.0f} | {x['bound']:,} | "
              f"{x['within_bound']:.0%} |" for x in r["t6"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
