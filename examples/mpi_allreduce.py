"""An MPI program driven step by step from the client: engines are the ranks of one mpiexec.

Each rank integrates 4/(1+x^2) over its own slice of [0, 1]; an MPI allreduce adds the pieces
(pi) on every rank; the client then checks that all ranks agree.  Needs an MPI implementation
(mpiexec) and mpi4py.

    python examples/mpi_allreduce.py [n_ranks] [points_per_rank]
"""

import math
import shutil
import sys

import ipcluster as ipp

STEP = """
from mpi4py import MPI
import numpy as np

h = 1.0 / (mpi_size * points)
x = (mpi_rank * points + np.arange(points) + 0.5) * h   # this rank's midpoints
local = float(np.sum(4.0 / (1.0 + x * x)) * h)
pi = MPI.COMM_WORLD.allreduce(local, op=MPI.SUM)
"""


def main(n_ranks: int = 3, points: int = 200_000) -> float:
    with ipp.Cluster(engines="mpi", n=n_ranks) as rc:
        view = rc[:]
        view["points"] = points
        view.execute(STEP, block=True)
        ranks = view["mpi_rank"]
        results = view["pi"]
    print(f"ranks {sorted(ranks)} of {n_ranks}; pi ~ {results[0]:.12f} on every rank "
          f"(error {abs(results[0] - math.pi):.1e})")
    assert len(set(results)) == 1, f"ranks disagree: {results}"
    return results[0]


if __name__ == "__main__":
    if shutil.which("mpiexec") is None:
        sys.exit("this example needs MPI: install Open MPI (mpiexec) and mpi4py")
    main(*(int(a) for a in sys.argv[1:3]))
