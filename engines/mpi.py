"""Engines started by ``mpiexec``: one engine per MPI rank (``ipcluster-engine --mpi``).

With ``--mpi`` the engine initialises MPI through mpi4py *before* it connects to the controller,
in its main thread (where user code runs too), and seeds its namespace with

* ``mpi_rank`` — this engine's rank in ``MPI.COMM_WORLD``;
* ``mpi_size`` — the size of ``MPI.COMM_WORLD``.

User code can then ``from mpi4py import MPI`` and talk to the other engines of the same
``mpiexec`` (``MPI.COMM_WORLD.allreduce(...)`` from a DirectView ``execute``).  The names are put
back after the namespace is cleared.

Without mpi4py the rank and size come from the environment the MPI launcher sets for each process
(Open MPI's ``OMPI_COMM_WORLD_*``, MPICH/Hydra's ``PMI_*``), and a warning says that
``from mpi4py import MPI`` will not work; outside ``mpiexec`` altogether, ``--mpi`` is an error.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

log = logging.getLogger("engines.mpi")

#: (rank, size) variable pairs set per process by common MPI launchers.
_RANK_VARIABLES = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI
    ("PMI_RANK", "PMI_SIZE"),  # MPICH / Intel MPI (Hydra)
    ("PMIX_RANK", "PMIX_SIZE"),
)


class MPIUnavailable(RuntimeError):
    """Neither mpi4py nor an MPI launcher's environment tells this process its rank."""


def rank_from_environment(env: Mapping[str, str]) -> tuple[int, int] | None:
    """``(rank, size)`` from the variables an MPI launcher sets, or ``None`` when there are none."""
    for rank_var, size_var in _RANK_VARIABLES:
        if env.get(rank_var, "").isdigit() and env.get(size_var, "").isdigit():
            return int(env[rank_var]), int(env[size_var])
    return None


def mpi_namespace() -> dict[str, int]:
    """Initialise MPI (through mpi4py when installed) and return ``{"mpi_rank": .., "mpi_size": ..}``.

    Raises :class:`MPIUnavailable` when this process is not an MPI rank at all.
    """
    try:
        from mpi4py import MPI  # the import initialises MPI (MPI_Init_thread)
    except ImportError as e:
        found = rank_from_environment(os.environ)
        if found is None:
            raise MPIUnavailable(
                f"--mpi: cannot import mpi4py ({e}) and no MPI rank in the environment; "
                "install mpi4py and start the engines with mpiexec"
            ) from None
        log.warning("mpi4py is not importable (%s): `from mpi4py import MPI` will fail in this engine", e)
        rank, size = found
    else:
        rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
        if size == 1 and rank_from_environment(os.environ) is None:
            log.warning("--mpi: this engine is a single MPI process (not started by mpiexec?)")
    log.info("MPI rank %d of %d", rank, size)
    return {"mpi_rank": rank, "mpi_size": size}
