"""How often the bag of little bootstraps calls two models made the same way different.

    python tools/blb_false_calls.py PAIRS RESAMPLES SEED

Each pair is two runs of 20,000 examples drawn from one model (5 classes, confidence uniform
on [0.4, 1], accuracy 0.05 below it). For each metric, the p-value of the paired difference
is taken two ways from the same resamples: quantiles of each subset averaged (Kleiner et al.
2014) and quantiles of the subsets' deviations pooled. Printed: the share of pairs with
p < 0.05 (it should be about 0.05) and the mean width of the 95% interval. The figures at
paired.FEW_PER_SUBSET come from this script.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from metricdiff import paired  # noqa: E402
from metricdiff.paired import (BootstrapPlan, ResampleView, _inverted_p,  # noqa: E402
                               _mean_quantile, resample_values)
from test_paired import per_example  # noqa: E402

K, N, BINS = 5, 20_000, 15
METRICS = ("balanced_accuracy", "ece", "ece_adaptive", "macro_f1")


def main(pairs: int, resamples: int, seed: int) -> None:
    paired.FULL_BOOTSTRAP_MAX = 1000  # 20,000 examples: the little bootstraps
    rng = np.random.default_rng(seed)

    def draw_run(label):
        conf = rng.uniform(0.4, 1.0, N)
        return per_example(rng.random(N) < conf - 0.05, conf, label)

    calls = {rule: dict.fromkeys(METRICS, 0) for rule in ("averaged", "pooled")}
    widths = {rule: dict.fromkeys(METRICS, 0.0) for rule in ("averaged", "pooled")}
    started = time.time()
    for pair in range(pairs):
        label = rng.integers(0, K, N)
        base, cand = draw_run(label), draw_run(label)
        plan = BootstrapPlan(N, resamples, seed * 100_000 + pair)
        base_draws, cand_draws = resample_values([base, cand], K, BINS,
                                                 [set(METRICS)] * 2, plan)
        ones = np.ones((1, N))
        base_all = ResampleView(base, K, BINS).metrics(ones, set(METRICS))
        cand_all = ResampleView(cand, K, BINS).metrics(ones, set(METRICS))
        for name in METRICS:
            deltas = cand_draws[name] - base_draws[name]
            deviations = np.sort(deltas[:, 1:] - deltas[:, :1], axis=1)
            observed = float(cand_all[name][0] - base_all[name][0])
            for rule, rows in (("averaged", deviations),
                               ("pooled", np.sort(deviations.ravel())[None, :])):
                p_value = max(_inverted_p(rows, observed), 1 / (rows.size + 1))
                calls[rule][name] += p_value < 0.05
                widths[rule][name] += (_mean_quantile(rows, 0.975)
                                       - _mean_quantile(rows, 0.025)) / pairs
    print(f"{pairs} pairs, {resamples} resamples: {plan.subsets} subsets of "
          f"{plan.per_subset} ({time.time() - started:.0f} s)")
    for rule in calls:
        print(f"{rule:9} false calls", {m: round(c / pairs, 4) for m, c in calls[rule].items()})
        print(f"{rule:9} 95% width  ", {m: round(w, 5) for m, w in widths[rule].items()})


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
