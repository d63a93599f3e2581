"""The MPI launchers against a real Open MPI + mpi4py: engines are the ranks of one mpiexec."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from traitlets.config import Config

import ipcluster as ipp
from ipcluster.errors import LauncherError
from tests.launchers.batch_fixtures import (
    assert_nothing_left,
    mpi_skip_reason,
    run_cluster_suite,
    skip_unless,
    wait_until,
)

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


def test_engine_sets_from_several_launchers_join_and_leave(tmp_path):
    """start_engines(n, launcher="mpi") adds MPI engines to a local cluster; stopping that set
    takes them away again while the others keep working."""
    cluster = ipp.Cluster(n=1, profile_dir=str(tmp_path / "p"), engine_timeout=60)
    try:
        rc = cluster.start_and_connect_sync()
        set_id = cluster.start_engines_sync(2, launcher="mpi")
        rc.wait_for_engines(3, timeout=30)
        assert cluster.engines[set_id].name == "mpi" and cluster.engines["0"].name == "local"
        rc[:].execute("has_rank = 'mpi_rank' in globals()", block=True)
        assert sorted(rc[:]["has_rank"]) == [False, True, True]
        cluster.stop_engines_sync(set_id)
        wait_until(lambda: len(rc.ids) == 1, 20, "the MPI engines to leave")
        assert rc[:].apply_sync(lambda: 5) == [5]
    finally:
        cluster.stop_cluster_sync()
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_cli_mpi_controller_and_engines(tmp_path):
    env = dict(__import__("os").environ, IPYTHONDIR=str(tmp_path / "ipython"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ipcluster.cli", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    try:
        out = cli("start", "-n", "2", "--engines=mpi", "--controller=mpi", "--daemonize")
        assert out.returncode == 0, out.stderr
        (listed,) = json.loads(cli("list", "--json").stdout)
        assert listed["controller"]["launcher"] == "mpi"
        assert [es["launcher"] for es in listed["engine_sets"]] == ["mpi"] and listed["state"] == "running"
    finally:
        out = cli("stop")
        assert out.returncode == 0, out.stderr
        assert_nothing_left(str(tmp_path / "ipython"), [], None)
