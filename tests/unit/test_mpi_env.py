"""MPI helpers that need no MPI: the rank from a launcher's environment, Open MPI's switches."""

from __future__ import annotations

from engines.mpi import rank_from_environment
from ipcluster.cluster.launchers.mpi import MPIEngineSetLauncher, mpi_environment


def test_rank_from_environment():
    assert rank_from_environment({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4"}) == (2, 4)
    assert rank_from_environment({"PMI_RANK": "0", "PMI_SIZE": "2"}) == (0, 2)
    assert rank_from_environment({"PMI_RANK": "x", "PMI_SIZE": "2"}) is None
    assert rank_from_environment({}) is None


def test_open_mpi_switches():
    env = mpi_environment({"PATH": "/bin"}, allow_run_as_root=True, oversubscribe=True, is_root=True)
    assert env["OMPI_ALLOW_RUN_AS_ROOT"] == env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] == "1"
    assert env["OMPI_MCA_rmaps_base_oversubscribe"] == "1" and env["PATH"] == "/bin"
    env = mpi_environment({}, allow_run_as_root=True, oversubscribe=False, is_root=False)
    assert env == {}  # not root: nothing to allow
    env = mpi_environment({"OMPI_MCA_rmaps_base_oversubscribe": "0"}, False, True, True)
    assert env["OMPI_MCA_rmaps_base_oversubscribe"] == "0"  # the user's own setting wins
    assert "OMPI_ALLOW_RUN_AS_ROOT" not in env


def test_engine_command_line():
    launcher = MPIEngineSetLauncher(n=3, connection_file="/p/security/c.json", log_path="/p/log/e.log",
                                    mpi_cmd=["mpirun"], mpi_args=["--bind-to", "none"])
    args = launcher.build_args()
    assert args[:5] == ["mpirun", "-n", "3", "--bind-to", "none"]
    assert args[-4:] == ["engines", "--file", "/p/security/c.json", "--mpi"]
