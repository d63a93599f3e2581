"""The Slurm launchers against a real single-node Slurm (``.ci/slurm-up.sh``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from traitlets.config import Config

import ipcluster as ipp
from ipcluster.cluster.launchers.batch.status import JobState
from ipcluster.errors import LauncherError
from tests.launchers.batch_fixtures import (
    assert_nothing_left,
    cancel_jobs,
    job_ids,
    run_cluster_suite,
    skip_unless,
    slurm_active_jobs,
    slurm_skip_reason,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def slurm():
    skip_unless(slurm_skip_reason())


def scancel(jobs: list[str]) -> None:
    cancel_jobs(["scancel"], jobs)


def test_cluster_with_slurm_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="slurm", active_jobs=slurm_active_jobs,
                              cancel=scancel)
    (job,) = facts["jobs"]
    # both engines are tasks of the one job, and got the connection info through the environment
    assert {env["SLURM_JOB_ID"] for env in facts["env"]} == {job}
    assert {env["IPCLUSTER_CLUSTER_ID"] for env in facts["env"]} == {"suite"}
    assert all(env["IPCLUSTER_CONNECTION_FILE"].endswith(".json") for env in facts["env"])
    (engine_set,) = facts["summary"]["engine_sets"]
    assert engine_set["job_id"] == job and engine_set["launcher"] == "slurm"


def test_slurm_controller_and_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="slurm", controller="slurm",
                              active_jobs=slurm_active_jobs, cancel=scancel)
    assert len(facts["jobs"]) == 2
    assert facts["summary"]["controller"]["job_state"] == "running"


def test_options_reach_sbatch(tmp_path):
    """Partition, time limit and extra options from a traitlets Config become #SBATCH lines."""
    c = Config()
    c.SlurmLauncher.queue = "debug"
    c.SlurmLauncher.timelimit = "10:00"
    c.SlurmEngineSetLauncher.options = ["--job-name=ipc-options-test"]
    cluster = ipp.Cluster(engines="slurm", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    try:
        rc = cluster.start_and_connect_sync()
        (job,) = job_ids(cluster)
        info = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
        assert "Partition=debug" in info and "TimeLimit=00:10:00" in info and "JobName=ipc-options-test" in info
        assert len(rc.ids) == 1
    finally:
        jobs = job_ids(cluster)
        cluster.stop_cluster_sync()
        assert_nothing_left(str(tmp_path / "p"), jobs, slurm_active_jobs)


def test_bad_partition_is_refused_with_the_reason(tmp_path):
    c = Config()
    c.SlurmEngineSetLauncher.queue = "no-such-partition"
    cluster = ipp.Cluster(engines="slurm", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=30)
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    assert time.monotonic() - t0 < 20
    message = str(info.value)
    assert "Slurm refused the engines job" in message and "partition" in message.lower()
    assert "engines.sh" in message  # names the job script
    assert not cluster.running
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_job_that_exits_at_once_fails_the_start_naming_the_job(tmp_path):
    c = Config()
    c.SlurmEngineSetLauncher.batch_template = "#!/bin/bash\necho engines cannot start here >&2\nexit 3\n"
    cluster = ipp.Cluster(engines="slurm", n=2, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    elapsed = time.monotonic() - t0
    assert elapsed < 30, elapsed  # noticed from the job state, not after the 60 s engine timeout
    message = str(info.value)
    assert "Slurm job" in message and "failed" in message and "exit code 3" in message
    assert info.value.returncode == 3
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_job_cancelled_from_outside_is_noticed(tmp_path):
    cluster = ipp.Cluster(engines="slurm", n=1, profile_dir=str(tmp_path / "p"), engine_timeout=60)
    jobs: list[str] = []
    try:
        cluster.start_and_connect_sync()
        jobs = job_ids(cluster)
        engines = cluster.engines["0"]
        assert engines.poll() is None and engines.job_state in ("queued", "running")
        subprocess.run(["scancel", engines.job_id], check=True)
        wait_until(lambda: engines.poll() is not None, 20, "the launcher to notice the cancelled job")
        assert engines.status.state is JobState.FAILED and engines.status.reason == "cancelled"
        assert cluster.status == "engines stopped"
        assert "cancelled" in str(engines.failure("engines ended"))
    finally:
        cluster.stop_cluster_sync()
        assert_nothing_left(str(tmp_path / "p"), jobs, slurm_active_jobs)


def test_signal_engines_interrupts_tasks(tmp_path):
    """cluster.signal_engines(SIGINT) goes through scancel --signal=INT to the engine tasks."""
    started = tmp_path / "started"

    def nap(path: str) -> None:
        import pathlib
        import time

        pathlib.Path(path).touch()
        time.sleep(30)

    cluster = ipp.Cluster(engines="slurm", n=1, profile_dir=str(tmp_path / "p"), engine_timeout=60)
    jobs: list[str] = []
    try:
        rc = cluster.start_and_connect_sync()
        jobs = job_ids(cluster)
        ar = rc[:].apply_async(nap, str(started))
        wait_until(started.exists, 20, "the task to start")
        t0 = time.monotonic()
        cluster.signal_engines(signal.SIGINT)
        with pytest.raises(Exception, match="KeyboardInterrupt"):
            ar.get(timeout=20)
        assert time.monotonic() - t0 < 15
        assert rc[:].apply_sync(lambda: 7) == [7]  # the engine keeps serving
    finally:
        cluster.stop_cluster_sync()
        assert_nothing_left(str(tmp_path / "p"), jobs, slurm_active_jobs)


def test_cli_start_list_add_engines_stop(tmp_path):
    """ipcluster start --engines=slurm, ipcluster list (job state), ipcluster engines, stop."""
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ipcluster.cli", *args], env=env, capture_output=True,
                              text=True, timeout=90)

    jobs: list[str] = []
    try:
        out = cli("start", "-n", "1", "--engines=slurm", "--daemonize")
        assert out.returncode == 0, out.stderr
        listed = json.loads(cli("list", "--json").stdout)
        (engine_set,) = listed[0]["engine_sets"]
        jobs.append(engine_set["job_id"])
        assert engine_set["job_state"] == "running" and engine_set["launcher"] == "slurm"
        table = cli("list").stdout
        assert f"engines=job {engine_set['job_id']} (running)" in table
        out = cli("engines", "-n", "2", "--engines", "slurm")
        assert out.returncode == 0, out.stderr
        assert "3 engines registered" in out.stdout
        listed = json.loads(cli("list", "--json").stdout)
        jobs = [es["job_id"] for es in listed[0]["engine_sets"]]
        assert len(jobs) == 2 and listed[0]["n"] == 3
    finally:
        out = cli("stop")
        assert out.returncode == 0, out.stderr
        assert_nothing_left(str(tmp_path / "ipython"), jobs, slurm_active_jobs)
        scancel(jobs)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_wall_time_is_noticed(tmp_path):
    """A job that reaches its time limit ends as failed ("wall time reached")."""
    c = Config()
    c.SlurmEngineSetLauncher.timelimit = "1"  # minutes: Slurm's smallest limit
    cluster = ipp.Cluster(engines="slurm", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    jobs: list[str] = []
    try:
        cluster.start_and_connect_sync()
        jobs = job_ids(cluster)
        engines = cluster.engines["0"]
        wait_until(lambda: engines.poll() is not None, 200, "the job to reach its time limit")
        assert engines.status.state is JobState.FAILED and engines.status.reason == "wall time reached"
    finally:
        cluster.stop_cluster_sync()
        assert_nothing_left(str(tmp_path / "p"), jobs, slurm_active_jobs)


def test_generic_batch_launcher_with_slurm_commands(tmp_path):
    """The generic launcher: your template, submit/delete commands and an exit-status check."""
    c = Config()
    c.BatchEngineSetLauncher.submit_command = ["sbatch"]  # prints "Submitted batch job 12"
    c.BatchEngineSetLauncher.job_id_regexp = r"Submitted batch job (\d+)"
    c.BatchEngineSetLauncher.job_id_regexp_group = 1
    c.BatchEngineSetLauncher.delete_command = ["scancel"]
    c.BatchEngineSetLauncher.status_command = ["sh", "-c", 'squeue -h -j "$0" | grep -q .']
    c.BatchEngineSetLauncher.batch_template = (
        "#!/bin/bash\n#SBATCH --ntasks=1\n#SBATCH --output={output_file}\n{environment}\n{program_and_args}\n")
    facts = run_cluster_suite(tmp_path / "profile", engines="batch", config=c, active_jobs=slurm_active_jobs,
                              cancel=scancel)
    assert {env["SLURM_JOB_ID"] for env in facts["env"]} == set(facts["jobs"])
    assert facts["summary"]["engine_sets"][0]["launcher"] == "batch"


def test_engines_added_to_a_foreground_cluster_stop_with_it(tmp_path):
    """`ipcluster engines` records its job in the cluster file; the `ipcluster start` process in
    the foreground takes it over and cancels it when it stops (Ctrl-C)."""
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"))
    log = tmp_path / "start.log"
    with open(log, "w") as out:
        start = subprocess.Popen([sys.executable, "-m", "ipcluster.cli", "start", "-n", "1"], env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
    jobs: list[str] = []
    try:
        wait_until(lambda: "running" in log.read_text() or start.poll() is not None, 60, "the cluster to start")
        assert start.poll() is None, log.read_text()
        out = subprocess.run([sys.executable, "-m", "ipcluster.cli", "engines", "-n", "1", "--engines=slurm"],
                             env=env, capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        jobs = [out.stdout.split("job ")[1].split(")")[0]]
        assert jobs[0] in slurm_active_jobs()
        start.send_signal(signal.SIGINT)
        assert start.wait(60) == 0, log.read_text()
        # at once: not only once the engine gives up on its vanished controller (10 s)
        assert_nothing_left(str(tmp_path / "ipython"), jobs, slurm_active_jobs, timeout=6)
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()
        scancel(jobs)


def test_mpi_engines_in_a_slurm_job(tmp_path):
    """engine_args=["--mpi"] + SLURM_MPI_TYPE=pmix: the job's tasks are one MPI world (srun's PMIx)."""
    from tests.launchers.batch_fixtures import mpi_skip_reason

    skip_unless(mpi_skip_reason())
    c = Config()
    c.SlurmEngineSetLauncher.engine_args = ["--mpi"]
    c.SlurmEngineSetLauncher.environment = {"SLURM_MPI_TYPE": "pmix"}
    cluster = ipp.Cluster(engines="slurm", n=3, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    jobs: list[str] = []
    try:
        rc = cluster.start_and_connect_sync()
        jobs = job_ids(cluster)
        view = rc[:]
        assert sorted(view["mpi_rank"]) == [0, 1, 2] and view["mpi_size"] == [3, 3, 3]
        view.execute("from mpi4py import MPI; total = MPI.COMM_WORLD.allreduce(mpi_rank + 1)", block=True)
        assert view["total"] == [6, 6, 6]
    finally:
        cluster.stop_cluster_sync()
        assert_nothing_left(str(tmp_path / "p"), jobs, slurm_active_jobs)
