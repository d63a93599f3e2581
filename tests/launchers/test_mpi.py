"""The MPI launchers against a real Open MPI + mpi4py: engines are the ranks of one mpiexec."""

from __future__ import annotations

import time

import pytest
from traitlets.config import Config

import ipcluster as ipp
from ipcluster.errors import LauncherError
from tests.launchers.batch_fixtures import assert_nothing_left, mpi_skip_reason, run_cluster_suite, skip_unless

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def mpi():
    skip_unless(mpi_skip_reason())


def test_cluster_with_mpi_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="mpi", n=3)
    ranks = sorted(int(env["OMPI_COMM_WORLD_RANK"]) for env in facts["env"] if "OMPI_COMM_WORLD_RANK" in env)
    assert ranks in ([0, 1, 2], [])  # Open MPI says so; other MPIs use other variables


@pytest.fixture
def mpi_cluster(tmp_path):
    cluster = ipp.Cluster(engines="mpi", n=3, profile_dir=str(tmp_path / "profile"), engine_timeout=60)
    rc = cluster.start_and_connect_sync()
    yield cluster, rc
    cluster.stop_cluster_sync()
    assert_nothing_left(str(tmp_path / "profile"), [], None)


def test_engines_know_their_rank_and_allreduce(mpi_cluster):
    cluster, rc = mpi_cluster
    view = rc[:]
    assert sorted(view["mpi_rank"]) == [0, 1, 2]
    assert view["mpi_size"] == [3, 3, 3]
    # an MPI program driven from the client: every rank contributes, every rank gets the sum
    view.execute("from mpi4py import MPI\n"
                 "comm = MPI.COMM_WORLD\n"
                 "total = comm.allreduce(mpi_rank + 1, op=MPI.SUM)\n"
                 "gathered = comm.gather(mpi_rank, root=0)", block=True)
    assert view["total"] == [6, 6, 6]
    by_rank = dict(zip(view["mpi_rank"], view["gathered"]))
    assert by_rank[0] == [0, 1, 2] and by_rank[1] is None


def test_rank_survives_clear_and_mpiexec_owns_the_engines(mpi_cluster):
    cluster, rc = mpi_cluster
    rc[:].execute("x = 1", block=True)
    rc[:].clear(block=True)
    assert sorted(rc[:]["mpi_rank"]) == [0, 1, 2]
    launcher = cluster.engines["0"]
    engine_pids = sorted(launcher.engine_pids())
    assert engine_pids == sorted(rc[:].apply_sync(lambda: __import__("os").getpid()))
    assert launcher.args[:1] == ["mpiexec"] and "--mpi" in launcher.args


def test_mpi_args_and_config(tmp_path):
    """c.MPILauncher.mpi_args reach mpiexec (here: an environment variable exported to every rank)."""
    c = Config()
    c.MPILauncher.mpi_args = ["-x", "IPC_MPI_TEST=from-mpi-args"]
    cluster = ipp.Cluster(engines="mpi", n=2, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    try:
        rc = cluster.start_and_connect_sync()
        assert rc[:].apply_sync(lambda: __import__("os").environ.get("IPC_MPI_TEST")) == ["from-mpi-args"] * 2
    finally:
        cluster.stop_cluster_sync()
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_mpi_controller(tmp_path):
    run_cluster_suite(tmp_path / "profile", engines="local", controller="mpi", n=2)


def test_missing_mpiexec_is_a_clear_error(tmp_path):
    c = Config()
    c.MPILauncher.mpi_cmd = ["/nonexistent/mpiexec"]
    cluster = ipp.Cluster(engines="mpi", n=2, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=30)
    with pytest.raises(LauncherError, match="mpiexec.*MPILauncher.mpi_cmd"):
        cluster.start_and_connect_sync()
    assert not cluster.running
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_mpiexec_that_fails_ends_the_start_quickly(tmp_path):
    c = Config()
    c.MPILauncher.mpi_args = ["--no-such-mpiexec-option"]
    cluster = ipp.Cluster(engines="mpi", n=2, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    assert time.monotonic() - t0 < 20
    assert "engine supervisor" in str(info.value) and info.value.returncode not in (None, 0)
    assert "no-such-mpiexec-option" in info.value.output
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_allow_run_as_root_off_is_honoured(tmp_path):
    """Without the switch Open MPI refuses root, and the error says so."""
    import os

    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    if any(k.startswith("OMPI_ALLOW_RUN_AS_ROOT") for k in os.environ):
        pytest.skip("OMPI_ALLOW_RUN_AS_ROOT is set in this environment")
    c = Config()
    c.MPILauncher.allow_run_as_root = False
    cluster = ipp.Cluster(engines="mpi", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=30)
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    assert "root" in info.value.output
    assert_nothing_left(str(tmp_path / "p"), [], None)
