"""Shared pieces of the MPI and batch-scheduler launcher tests.

* ``*_skip_reason()``: why a scheduler cannot be used here (``None`` when it can).  Locally the
  tests skip with that reason; ``.ci/run`` installs and starts every scheduler, so in CI they run.
* :func:`run_cluster_suite`: the same cluster test for every launcher — start, run tasks, check
  the reported job state, stop — followed by :func:`assert_nothing_left`: no engine or controller
  process and no job of the cluster survives the stop.

The LSF and HTCondor tests run against the fake commands in ``shims/`` (no real LSF or HTCondor
can be installed here); the PBS tests against Slurm's Torque wrappers (``qsub``, ``qstat``,
``qdel`` over a real Slurm).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import psutil
import pytest

import ipcluster as ipp
from ipcluster.cluster.launchers.batch.status import JobState

SHIMS = Path(__file__).parent / "shims"
#: Where Slurm's Torque wrappers are (.ci/run unpacks them there so they do not clash with SGE's qsub).
TORQUE_WRAPPERS = Path(os.environ.get("IPCLUSTER_TEST_PBS_BIN", "/opt/slurm-torque/usr/bin"))
SGE_ENV = {"SGE_ROOT": os.environ.get("SGE_ROOT", "/var/lib/gridengine"),
           "SGE_CELL": os.environ.get("SGE_CELL", "default")}


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 15) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def slurm_skip_reason() -> str | None:
    if not shutil.which("sbatch"):
        return "Slurm is not installed (no sbatch on PATH; .ci/slurm-up.sh installs and starts it)"
    out = _run(["sinfo", "-h", "-o", "%T"])
    if out is None or out.returncode != 0:
        return f"Slurm is not running (sinfo: {(out.stderr.strip() if out else 'timed out')[:200]}; run .ci/slurm-up.sh)"
    if not {"idle", "mixed", "allocated"} & set(out.stdout.split()):
        return f"no usable Slurm node (sinfo says {out.stdout.split()})"
    return None


def mpi_skip_reason() -> str | None:
    if not shutil.which("mpiexec"):
        return "MPI is not installed (no mpiexec on PATH; .ci/run installs openmpi-bin)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py; .ci/run does)"
    return None


def sge_env() -> dict[str, str]:
    return dict(os.environ, **SGE_ENV)


def sge_skip_reason() -> str | None:
    if not shutil.which("sge_qmaster", path="/usr/sbin:" + os.environ.get("PATH", "")):
        return "Grid Engine is not installed (.ci/sge-up.sh installs and starts it)"
    out = _run(["qconf", "-sql"], env=sge_env())
    if out is None or out.returncode != 0 or "all.q" not in out.stdout:
        return "Grid Engine is not running (qconf -sql failed; run .ci/sge-up.sh)"
    return None


def pbs_env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{TORQUE_WRAPPERS}:{os.environ.get('PATH', '')}")


def pbs_skip_reason() -> str | None:
    if not (TORQUE_WRAPPERS / "qsub").exists():
        return (f"Slurm's Torque wrappers are not in {TORQUE_WRAPPERS} (set IPCLUSTER_TEST_PBS_BIN; "
                ".ci/torque-wrappers.sh unpacks them)")
    return slurm_skip_reason()


def shim_env(state_dir: Path) -> dict[str, str]:
    return dict(os.environ, PATH=f"{SHIMS}:{os.environ.get('PATH', '')}", FAKE_BATCH_DIR=str(state_dir))


def skip_unless(reason: str | None) -> None:
    if reason:
        pytest.skip(reason)


# --- leftovers -----------------------------------------------------------------------------------


def cluster_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose command line mentions *marker* (a profile directory)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(marker in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    interval = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline-bounded wait
        interval = min(interval * 2, 0.25)


def assert_nothing_left(marker: str, jobs: Iterable[str], active_jobs: Callable[[], set[str]] | None,
                        timeout: float = 20) -> None:
    """No process mentioning *marker* and none of *jobs* in the scheduler's queue; kill leftovers."""
    jobs = set(jobs)
    try:
        if active_jobs is not None and jobs:
            wait_until(lambda: not (jobs & active_jobs()), timeout, f"jobs {sorted(jobs)} to leave the queue")
        wait_until(lambda: not cluster_processes(marker), timeout, f"the processes of {marker} to end")
    finally:
        for proc in cluster_processes(marker):
            try:
                proc.kill()
            except psutil.Error:
                pass


def slurm_active_jobs(env: dict[str, str] | None = None) -> set[str]:
    out = _run(["squeue", "-h", "-o", "%i"], env=env)
    assert out is not None and out.returncode == 0, "squeue failed"
    return set(out.stdout.split())


def sge_active_jobs() -> set[str]:
    out = _run(["qstat", "-u", "*"], env=sge_env())
    assert out is not None and out.returncode == 0, "qstat failed"
    return {line.split()[0] for line in out.stdout.splitlines()[2:] if line.split()}


def cancel_jobs(cmd: list[str], jobs: Iterable[str], env: dict[str, str] | None = None) -> None:
    """Best-effort cleanup after a failed test (the launchers are what is tested, not this)."""
    jobs = [j for j in jobs if j]
    if jobs:
        _run([*cmd, *jobs], env=env)


# --- the common cluster test ---------------------------------------------------------------------


def job_ids(cluster: Any) -> list[str]:
    launchers = [cluster.controller, *cluster.engines.values()]
    return [getattr(launcher, "job_id", "") for launcher in launchers if getattr(launcher, "job_id", "")]


def run_cluster_suite(profile_dir: Path, engines: str, controller: str = "local", n: int = 2,
                      config: Any = None, active_jobs: Callable[[], set[str]] | None = None,
                      cancel: Callable[[list[str]], None] | None = None, timeout: float = 60) -> dict[str, Any]:
    """Start a cluster with the given launchers, run tasks, check job states, stop; nothing left.

    Returns facts for backend-specific checks: the engines' environment and the job ids.
    """
    cluster = ipp.Cluster(engines=engines, controller=controller, n=n, profile_dir=str(profile_dir),
                          cluster_id="suite", config=config, engine_timeout=timeout)
    jobs: list[str] = []
    facts: dict[str, Any] = {}
    started = time.monotonic()
    try:
        rc = cluster.start_and_connect_sync()
        facts["startup_seconds"] = time.monotonic() - started
        jobs = job_ids(cluster)
        assert len(rc.ids) == n
        pids = rc[:].apply_sync(os.getpid)
        assert len(set(pids)) == n, f"engines are not distinct processes: {pids}"
        squares = rc.load_balanced_view().map_sync(lambda x: x * x, range(24))
        assert squares == [x * x for x in range(24)]
        rc[:].execute("import os; marker = os.environ.get('IPCLUSTER_CLUSTER_ID')", block=True)
        facts["env"] = rc[:].apply_sync(lambda: dict(__import__("os").environ))
        for launcher in [cluster.controller, *cluster.engines.values()]:
            if hasattr(launcher, "job_state"):
                status = launcher.refresh(force=True)
                assert status is not None and status.state is JobState.RUNNING, (launcher, status)
        from ipcluster.cli import cluster_summary

        facts["summary"] = cluster_summary(cluster)
    finally:
        jobs = jobs or job_ids(cluster)
        try:
            cluster.stop_cluster_sync()
        finally:
            try:
                assert_nothing_left(str(profile_dir), jobs, active_jobs)
            finally:
                if cancel is not None:
                    cancel(jobs)
    facts["jobs"] = jobs
    return facts
