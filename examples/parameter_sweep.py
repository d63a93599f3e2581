"""A parameter sweep as load-balanced tasks, with a progress bar.

Each task integrates a damped oscillator for one (damping, frequency) pair and reports its energy
at the end; the controller hands tasks to whichever engine is free.

    python examples/parameter_sweep.py [n_engines]
"""

import itertools
import sys

import ipcluster as ipp


def final_energy(params):
    """Semi-implicit Euler integration of x'' = -2*zeta*w*x' - w^2*x; energy at t = 10."""
    zeta, w = params
    x, v, dt = 1.0, 0.0, 1e-3
    for _ in range(10_000):
        v += (-2 * zeta * w * v - w * w * x) * dt
        x += v * dt
    return 0.5 * v * v + 0.5 * w * w * x * x


def main(n_engines: int = 2) -> None:
    grid = list(itertools.product([0.0, 0.05, 0.1, 0.2, 0.5], [0.5, 1.0, 2.0, 4.0]))
    with ipp.Cluster(n=n_engines) as rc:
        lview = rc.load_balanced_view()
        ar = lview.map_async(final_energy, grid, chunksize=1)
        ar.wait_interactive()
        energies = ar.get()
        engines = sorted({md.engine_id for md in ar.metadata})
    for (zeta, w), energy in zip(grid, energies):
        print(f"damping {zeta:4.2f}  frequency {w:3.1f}  energy {energy:9.5f}")
    undamped = [e for (zeta, w), e in zip(grid, energies) if zeta == 0.0]
    assert all(abs(e - 0.5 * w * w) / (0.5 * w * w) < 0.05 for e, w in zip(undamped, [0.5, 1.0, 2.0, 4.0]))
    print(f"{len(grid)} tasks on engines {engines}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:2]])
