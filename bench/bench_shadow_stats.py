"""The shadow decision's error rate under repeated looks, by simulation through the evaluator's own code.

Runs are independent label streams from a :class:`deepseek_ray.eval.simulation.PairLaw` (two binary
classifiers with a chosen population gap and disagreement rate); each is fed, vectorised over runs, through
``deepseek_ray.eval.sequential.confidence_sequence`` — the confidence sequence ``ShadowModeEvaluator`` uses —
and looked at every ``--every`` labels up to ``--until``. At the null boundary (true Δ = threshold) the
share promoted at any look must have a 95% Clopper–Pearson upper bound ≤ α; the fixed-sample one-sided
Wald test (``Δ̂ − z_{1−α} σ̂/√n > threshold``) re-checked at the same looks is the control. At Δ = threshold +
``--effect`` the table gives the power (promoted by ``--until``) and the labels to the decision.

    nice -n 19 python bench/bench_shadow_stats.py [--runs 5000] [--every 50] [--until 5000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from deepseek_ray.eval.sequential import clopper_pearson
from deepseek_ray.eval.simulation import LookResult, PairLaw, accuracy_law, f1_law, repeated_looks

LAWS = {"accuracy": accuracy_law, "f1_score": f1_law}


def share(decided_at: np.ndarray) -> tuple[int, float, float, float]:
    """(count, share, 95% Clopper–Pearson low, high) of runs that decided."""
    count = int((decided_at > 0).sum())
    low, high = clopper_pearson(count, len(decided_at))
    return count, count / len(decided_at), low, high


def median_labels(decided_at: np.ndarray, until: int) -> str:
    """Median labels to the decision over all runs (an undecided run counts as never), and over decided runs."""
    overall = np.median(np.where(decided_at > 0, decided_at, np.iinfo(np.int64).max))
    decided = decided_at[decided_at > 0]
    among = f"{np.median(decided):,.0f}" if len(decided) else "–"
    return f"{overall:,.0f} / {among}" if overall <= until else f"> {until:,} / {among}"


def scenario(metric: str, law: PairLaw, args: argparse.Namespace, seed: int) -> tuple[LookResult, float]:
    start = time.perf_counter()
    result = repeated_looks(
        law, metric, args.threshold, alpha=args.alpha, runs=args.runs, every=args.every, until=args.until,
        seed=seed, horizon=args.horizon, min_n=args.min_n,
    )  # fmt: skip
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--until", type=int, default=5000)
    parser.add_argument("--threshold", type=float, default=0.02)
    parser.add_argument("--effect", type=float, default=0.02, help="true Δ − threshold for the power rows")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--horizon", type=int, default=5000)
    parser.add_argument("--min-n", type=int, default=100)
    parser.add_argument("--disagreements", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--metrics", nargs="+", default=list(LAWS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    looks = args.until // args.every
    print(f"{platform.processor() or platform.machine()}, numpy {np.__version__}; {args.runs:,} runs per row, "
          f"a look every {args.every} labels up to {args.until:,} ({looks} looks), threshold {args.threshold}, "
          f"alpha {args.alpha}, horizon {args.horizon}, min_n {args.min_n}\n")  # fmt: skip
    null_rows, power_rows = [], []
    seed = args.seed
    for metric in args.metrics:
        for disagreement in args.disagreements:
            null_law = LAWS[metric](args.threshold, disagreement)
            alt_law = LAWS[metric](args.threshold + args.effect, disagreement)
            cand, live = null_law.population(metric)
            null, null_s = scenario(metric, null_law, args, seed)
            alt, alt_s = scenario(metric, alt_law, args, seed + 1)
            seed += 2
            count, rate, _, high = share(null.promoted_at)
            naive_count, naive_rate, naive_low, _ = share(null.naive_promoted_at)
            _, keep_rate, _, keep_high = share(null.kept_at)
            verdict = "≤ α" if high <= args.alpha else "**> α**"
            null_rows.append(
                f"| {metric} | {disagreement:.0%} | {live:.4f} → {cand:.4f} | {count} ({rate:.4f}) "
                f"| {high:.4f} {verdict} "
                f"| {keep_rate:.4f} (≤ {keep_high:.4f}) | {naive_count} ({naive_rate:.4f}; CP low {naive_low:.4f}) "
                f"| {null_s:.1f} s |"
            )
            _, power, _, _ = share(alt.promoted_at)
            _, wrong_keep, _, _ = share(alt.kept_at)
            _, naive_power, _, _ = share(alt.naive_promoted_at)
            cand_a, live_a = alt_law.population(metric)
            power_rows.append(
                f"| {metric} | {disagreement:.0%} | {live_a:.4f} → {cand_a:.4f} | {power:.4f} | {wrong_keep:.4f} "
                f"| {median_labels(alt.promoted_at, args.until)} | {naive_power:.4f} "
                f"| {median_labels(alt.naive_promoted_at, args.until)} | {alt_s:.1f} s |"
            )
            print(null_rows[-1], flush=True)
            print(power_rows[-1], flush=True)
    print(f"\nAt the null boundary (true Δ = threshold = {args.threshold}), promoted at any of {looks} looks:\n")
    print("| metric | disagree | population live → candidate | promoted (share) | CP 95% upper | kept (CP upper) "
          "| fixed-sample Wald, re-checked | time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(null_rows))
    print(f"\nPower at true Δ = threshold + {args.effect} (promoted by label {args.until:,}):\n")
    print("| metric | disagree | population live → candidate | power | kept (wrong) | median labels to promote "
          "(all runs / promoted runs) | Wald re-checked: promoted | Wald: median labels | time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(power_rows))


if __name__ == "__main__":
    main()
