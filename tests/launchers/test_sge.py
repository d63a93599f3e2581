"""The Grid Engine launchers against a real single-node SGE (``.ci/sge-up.sh``)."""

from __future__ import annotations

import time

import pytest
from traitlets.config import Config

import ipcluster as ipp
from ipcluster.errors import LauncherError
from tests.launchers.batch_fixtures import (
    SGE_ENV,
    assert_nothing_left,
    cancel_jobs,
    run_cluster_suite,
    sge_active_jobs,
    sge_env,
    sge_skip_reason,
    skip_unless,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def sge(monkeypatch):
    for name, value in SGE_ENV.items():
        monkeypatch.setenv(name, value)
    skip_unless(sge_skip_reason())


def qdel(jobs: list[str]) -> None:
    cancel_jobs(["qdel"], jobs, env=sge_env())


def test_cluster_with_sge_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="sge", active_jobs=sge_active_jobs, cancel=qdel)
    (job,) = facts["jobs"]
    # one array job, one engine per task
    assert {env["JOB_ID"] for env in facts["env"]} == {job}
    assert sorted(env["SGE_TASK_ID"] for env in facts["env"]) == ["1", "2"]
    assert {env["IPCLUSTER_CLUSTER_ID"] for env in facts["env"]} == {"suite"}


def test_sge_controller_and_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="sge", controller="sge",
                              active_jobs=sge_active_jobs, cancel=qdel)
    assert len(facts["jobs"]) == 2


def test_job_that_exits_at_once_fails_the_start_naming_the_job(tmp_path):
    c = Config()
    c.SGEEngineSetLauncher.batch_template = "#!/bin/bash\n#$ -S /bin/bash\n#$ -o {output_file}\n#$ -j y\nexit 4\n"
    cluster = ipp.Cluster(engines="sge", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    assert time.monotonic() - t0 < 40
    assert "SGE job" in str(info.value)
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_bad_queue_is_refused(tmp_path):
    c = Config()
    c.SGELauncher.queue = "no-such.q"
    cluster = ipp.Cluster(engines="sge", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=30)
    with pytest.raises(LauncherError, match="SGE refused the engines job.*no-such.q"):
        cluster.start_and_connect_sync()
    assert_nothing_left(str(tmp_path / "p"), [], None)
