"""Launchers that run the engines (or the controller) under ``mpiexec`` on this machine.

``MPIEngineSetLauncher`` runs ``mpiexec -n N python -P -m engines --file CONN --mpi``: N engines
that are the N ranks of one ``MPI.COMM_WORLD``.  Each engine has ``mpi_rank`` and ``mpi_size`` in
its namespace and can ``from mpi4py import MPI`` (see :mod:`engines.mpi`), so MPI programs can be
driven from a client::

    view.execute("from mpi4py import MPI; total = MPI.COMM_WORLD.allreduce(mpi_rank)")

Configuration (``ipcluster_config.py`` or ``Cluster(config=...)``)::

    c.MPILauncher.mpi_cmd = ["mpiexec"]            # or ["/opt/openmpi/bin/mpirun"]
    c.MPILauncher.mpi_args = ["--hostfile", "hosts"]
    c.MPILauncher.allow_run_as_root = True         # Open MPI refuses root without it
    c.MPILauncher.oversubscribe = True             # more ranks than cores (engines mostly wait)

The two switches are passed as Open MPI environment variables (``OMPI_ALLOW_RUN_AS_ROOT``...,
``OMPI_MCA_rmaps_base_oversubscribe``) rather than command-line flags, because other MPI
implementations (MPICH) reject Open MPI's flags but ignore its variables.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from traitlets import Bool, Dict, List, Unicode

from ipcluster.cluster.launchers.local import (
    LocalControllerLauncher,
    LocalEngineSetLauncher,
    LocalProcessLauncher,
)
from ipcluster.errors import LauncherError


def mpi_environment(
    base: dict[str, str], allow_run_as_root: bool, oversubscribe: bool, is_root: bool
) -> dict[str, str]:
    """*base* plus the variables that make Open MPI accept root and oversubscription."""
    env = dict(base)
    if allow_run_as_root and is_root:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    if oversubscribe:
        env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")  # Open MPI 4
        env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")  # Open MPI 5
    return env


class MPILauncher(LocalProcessLauncher):
    """Common options of the MPI launchers (configure them as ``c.MPILauncher.*``)."""

    name = "mpi"

    mpi_cmd = List(Unicode(), default_value=["mpiexec"],
                   help="The command that starts MPI programs (mpiexec, mpirun, srun --mpi=pmix...).").tag(
        config=True
    )
    mpi_args = List(Unicode(), help="Extra arguments for mpi_cmd, before the program "
                    "(e.g. ['--hostfile', 'hosts', '--bind-to', 'none']).").tag(config=True)
    allow_run_as_root = Bool(True, help="When running as root, let Open MPI run anyway "
                             "(OMPI_ALLOW_RUN_AS_ROOT=1; it refuses by default).").tag(config=True)
    oversubscribe = Bool(True, help="Allow more ranks than cores (Open MPI refuses by default; "
                         "engines mostly wait for work).").tag(config=True)
    mpi_env = Dict(Unicode(), help="Extra environment variables for mpi_cmd.").tag(config=True)

    def mpi_prefix(self, n: int) -> list[str]:
        if not self.mpi_cmd:
            raise LauncherError(f"{self}: c.MPILauncher.mpi_cmd is empty")
        return [*self.mpi_cmd, "-n", str(n), *self.mpi_args]

    def build_env(self) -> dict[str, str] | None:
        env = mpi_environment(dict(os.environ), self.allow_run_as_root, self.oversubscribe,
                              is_root=hasattr(os, "geteuid") and os.geteuid() == 0)
        env.update(self.mpi_env)
        return env

    async def start(self) -> None:
        try:
            await super().start()
        except LauncherError as e:
            raise LauncherError(f"{e} (is MPI installed? set c.MPILauncher.mpi_cmd)") from e


class MPIControllerLauncher(MPILauncher, LocalControllerLauncher):
    """The controller as a one-rank MPI program (``mpiexec -n 1 python -P -m controller``)."""

    kind = "controller"

    def build_args(self) -> list[str]:
        return self.mpi_prefix(1) + LocalControllerLauncher.build_args(self)

    @property
    def controller_pid(self) -> int | None:
        """The controller is a child of mpiexec, whose pid it does not know in advance."""
        return None


class MPIEngineSetLauncher(MPILauncher, LocalEngineSetLauncher):
    """*n* engines as the *n* ranks of one ``mpiexec`` (one engine per rank, no supervisor)."""

    kind = "engines"

    def build_args(self) -> list[str]:
        if not self.connection_file:
            raise LauncherError(f"{self}: no connection file given")
        # the engines' log goes to their stderr, which mpiexec forwards into log_path
        program = [sys.executable, "-P", "-m", "engines", "--file", self.connection_file, "--mpi"]
        return self.mpi_prefix(self.n) + program + list(self.engine_args)

    def engine_pids(self) -> list[int]:
        """Pids of the engine processes (the ranks below mpiexec)."""
        return [p.pid for p in self._ranks()]

    def _ranks(self) -> list[Any]:
        if self.process is None:
            return []
        import psutil

        if self.running:
            try:
                procs = psutil.Process(self.process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                procs = self.process.group_members()
        else:
            procs = self.process.group_members()
        ranks = []
        for proc in procs:
            try:
                if "engines" in proc.cmdline():
                    ranks.append(proc)
            except psutil.Error:
                continue
        return ranks

    def signal_engines(self, signum: int) -> None:
        """Send *signum* to every rank (not to mpiexec, which would end the whole job)."""
        import psutil

        for proc in self._ranks():
            try:
                proc.send_signal(signum)
            except psutil.NoSuchProcess:
                pass
