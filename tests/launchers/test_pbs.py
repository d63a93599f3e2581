"""The PBS launchers against Slurm's Torque wrappers (``qsub``/``qstat``/``qdel`` over a real Slurm).

There is no PBS or Torque server for this machine; the wrappers make a real scheduler run the
PBS-style scripts, which is what the launcher must get right (directives, job id, state, qdel).
"""

from __future__ import annotations

import time

import pytest
from traitlets.config import Config

import ipcluster as ipp
from ipcluster.errors import LauncherError
from tests.launchers.batch_fixtures import (
    TORQUE_WRAPPERS,
    assert_nothing_left,
    cancel_jobs,
    pbs_skip_reason,
    run_cluster_suite,
    skip_unless,
    slurm_active_jobs,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def pbs(monkeypatch):
    skip_unless(pbs_skip_reason())
    monkeypatch.setenv("PATH", f"{TORQUE_WRAPPERS}:{__import__('os').environ['PATH']}")


def qdel(jobs: list[str]) -> None:
    cancel_jobs(["qdel"], jobs)


def test_cluster_with_pbs_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="pbs", active_jobs=slurm_active_jobs, cancel=qdel)
    (job,) = facts["jobs"]
    assert {env["SLURM_JOB_ID"] for env in facts["env"]} == {job}  # one job, two engines
    assert {env["SLURM_NTASKS"] for env in facts["env"]} == {"2"}  # from '#PBS -l nodes=1:ppn=2'
    assert {env["IPCLUSTER_CLUSTER_ID"] for env in facts["env"]} == {"suite"}


def test_pbs_controller_and_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="pbs", controller="pbs",
                              active_jobs=slurm_active_jobs, cancel=qdel)
    assert len(facts["jobs"]) == 2


def test_ipyparallel_style_user_template(tmp_path):
    """A template written for ipyparallel (its field names) works unchanged."""
    c = Config()
    c.PBSEngineSetLauncher.batch_template = (
        "#!/bin/sh\n#PBS -N ipengine-{cluster_id}\n#PBS -l nodes=1:ppn={n}\n"
        "cd {profile_dir}\n{program_and_args}\n"
    )
    cluster = ipp.Cluster(engines="pbs", n=2, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    jobs: list[str] = []
    try:
        rc = cluster.start_and_connect_sync()
        jobs = [cluster.engines["0"].job_id]
        assert rc[:].apply_sync(lambda: __import__("os").getcwd()) == [str(tmp_path / "p")] * 2
    finally:
        cluster.stop_cluster_sync()
        assert_nothing_left(str(tmp_path / "p"), jobs, slurm_active_jobs)
        qdel(jobs)


def test_job_that_exits_at_once_fails_the_start_naming_the_job(tmp_path):
    c = Config()
    c.PBSEngineSetLauncher.batch_template = "#!/bin/bash\necho no engines today\nexit 5\n"
    cluster = ipp.Cluster(engines="pbs", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    assert time.monotonic() - t0 < 30
    assert "PBS job" in str(info.value) and "engines.sh" in str(info.value)
    assert_nothing_left(str(tmp_path / "p"), [], None)
