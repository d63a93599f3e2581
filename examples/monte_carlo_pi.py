"""Estimate pi by Monte Carlo with scatter / gather on a DirectView.

Each engine receives its own block of random seeds (scatter), draws points, counts hits, and the
client gathers the per-seed counts back in order.

    python examples/monte_carlo_pi.py [n_engines] [samples_per_seed]
"""

import sys
import time

import numpy as np

import ipcluster as ipp


def count_hits() -> None:
    """Runs on each engine, in its namespace: uses the scattered ``seeds``, leaves ``hits``."""
    import numpy as np

    global hits
    hits = []
    for seed in seeds:  # noqa: F821 - pushed by scatter
        rng = np.random.default_rng(int(seed))
        xy = rng.random((samples, 2))  # noqa: F821 - pushed by push
        hits.append(int(np.count_nonzero((xy * xy).sum(axis=1) <= 1.0)))


def main(n_engines: int = 2, samples: int = 500_000, n_seeds: int = 16) -> float:
    with ipp.Cluster(n=n_engines) as rc:
        dview = rc[:]
        t0 = time.perf_counter()
        dview.push({"samples": samples}, block=True)
        dview.scatter("seeds", np.arange(n_seeds), block=True)   # seeds 0..15 split over engines
        dview.apply_sync(ipp.interactive(count_hits))
        hits = dview.gather("hits", block=True)                  # back in seed order
        pi = 4.0 * sum(hits) / (samples * n_seeds)
        elapsed = time.perf_counter() - t0
    print(f"pi ~ {pi:.5f} from {samples * n_seeds:,} samples on {n_engines} engines in {elapsed:.2f} s")
    return pi


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    estimate = main(*args)
    assert abs(estimate - np.pi) < 0.01, estimate
