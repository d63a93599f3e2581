"""The HTCondor launchers against the fake ``condor_submit``/``condor_q``/``condor_history``/
``condor_rm`` in ``shims/`` (HTCondor cannot be installed here; the fakes read the submit
description, run the job on this machine and answer in HTCondor's formats)."""

from __future__ import annotations

import subprocess
import time

import pytest
from traitlets.config import Config

import ipcluster as ipp
from ipcluster.cluster.launchers.batch.status import JobState
from ipcluster.errors import LauncherError
from tests.launchers.batch_fixtures import SHIMS, assert_nothing_left, run_cluster_suite

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def condor(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{SHIMS}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_BATCH_DIR", str(tmp_path / "fake-condor"))


def active_jobs() -> set[str]:
    active = set()
    for job in range(1, 20):
        out = subprocess.run(["condor_q", str(job), "-af", "JobStatus", "ExitCode"], capture_output=True,
                             text=True).stdout
        if out.strip():
            active.add(str(job))
    return active


def test_cluster_with_htcondor_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="htcondor", active_jobs=active_jobs)
    assert len(facts["jobs"]) == 1
    # the connection info came through the submit description's environment
    assert {env["IPCLUSTER_CLUSTER_ID"] for env in facts["env"]} == {"suite"}
    assert all(env["IPCLUSTER_CONNECTION_FILE"].startswith(str(tmp_path / "profile")) for env in facts["env"])


def test_htcondor_controller_and_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="htcondor", controller="htcondor",
                              active_jobs=active_jobs)
    assert len(facts["jobs"]) == 2


def test_held_job_is_queued_then_removed(tmp_path):
    c = Config()
    c.HTCondorLauncher.options = ["hold = True"]
    cluster = ipp.Cluster(engines="htcondor", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    cluster.start_cluster_sync()
    try:
        engines = cluster.engines["0"]
        status = engines.refresh(force=True)
        assert status.state is JobState.QUEUED and status.reason == "held"
    finally:
        cluster.stop_cluster_sync()
    assert engines.status.state is JobState.FAILED and engines.status.reason == "removed"
    assert not active_jobs()


def test_job_that_exits_at_once_fails_the_start_naming_the_job(tmp_path):
    c = Config()
    c.HTCondorEngineSetLauncher.batch_template = (
        "universe = vanilla\nexecutable = /bin/sh\narguments = \"-c 'exit 6'\"\noutput = {output_file}\nqueue 1\n")
    cluster = ipp.Cluster(engines="htcondor", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    assert time.monotonic() - t0 < 20
    assert "HTCondor job" in str(info.value) and "exit code 6" in str(info.value)
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_submit_error_is_reported(tmp_path):
    c = Config()
    c.HTCondorEngineSetLauncher.batch_template = "universe = vanilla\nqueue 1\n"
    cluster = ipp.Cluster(engines="htcondor", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=30)
    with pytest.raises(LauncherError, match="HTCondor refused the engines job.*executable"):
        cluster.start_and_connect_sync()
    assert_nothing_left(str(tmp_path / "p"), [], None)
