"""The LSF launchers against the fake ``bsub``/``bjobs``/``bkill`` in ``shims/`` (LSF itself
cannot be installed here; the fakes run jobs on this machine and answer in LSF's formats)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from traitlets.config import Config

import ipcluster as ipp
from ipcluster.cluster.launchers.batch.status import JobState
from ipcluster.errors import LauncherError
from tests.launchers.batch_fixtures import SHIMS, assert_nothing_left, run_cluster_suite, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def lsf(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{SHIMS}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_BATCH_DIR", str(tmp_path / "fake-lsf"))


def active_jobs() -> set[str]:
    out = subprocess.run(["bjobs", *map(str, range(1, 50))], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines()[1:] if line.split()[2] in ("PEND", "RUN")}


def test_cluster_with_lsf_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="lsf", active_jobs=active_jobs)
    (job,) = facts["jobs"]
    assert {env["LSB_JOBID"] for env in facts["env"]} == {job}
    assert {env["IPCLUSTER_CLUSTER_ID"] for env in facts["env"]} == {"suite"}


def test_lsf_controller_and_engines(tmp_path):
    facts = run_cluster_suite(tmp_path / "profile", engines="lsf", controller="lsf", active_jobs=active_jobs)
    assert len(facts["jobs"]) == 2


def test_queued_job_is_reported_and_cancelled(tmp_path):
    """A job waiting in its queue is 'queued'; stopping cancels it."""
    c = Config()
    c.LSFLauncher.queue = "hold"  # the fake bsub keeps jobs of this queue pending
    c.LSFLauncher.poll_interval = 0.2
    cluster = ipp.Cluster(engines="lsf", n=2, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    cluster.start_cluster_sync()
    try:
        engines = cluster.engines["0"]
        assert engines.refresh(force=True).state is JobState.QUEUED
        assert engines.running and engines.poll() is None
        from ipcluster.cli import cluster_summary

        assert cluster_summary(cluster)["engine_sets"][0]["job_state"] == "queued"
        assert cluster.status == "engines queued"  # what `ipcluster list` shows as STATE
    finally:
        cluster.stop_cluster_sync()
    assert engines.status.state.ended
    assert not active_jobs()


def test_signalling_supervised_engines_is_refused_with_advice(tmp_path):
    """LSF would signal the engine supervisor too (which stops on SIGINT): a clear error instead."""
    cluster = ipp.Cluster(engines="lsf", n=1, profile_dir=str(tmp_path / "p"), engine_timeout=60)
    try:
        cluster.start_and_connect_sync()
        with pytest.raises(LauncherError, match="Client.send_signal"):
            cluster.signal_engines(signal.SIGINT)
    finally:
        cluster.stop_cluster_sync()
        assert_nothing_left(str(tmp_path / "p"), [], None)


def test_job_that_exits_at_once_fails_the_start_naming_the_job(tmp_path):
    c = Config()
    c.LSFEngineSetLauncher.batch_template = "#!/bin/bash\n#BSUB -o {output_file}\necho broken >&2\nexit 7\n"
    cluster = ipp.Cluster(engines="lsf", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    assert time.monotonic() - t0 < 20
    assert "LSF job" in str(info.value) and "failed" in str(info.value)
    assert "broken" in info.value.output
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_missing_bsub_is_a_clear_error(tmp_path):
    c = Config()
    c.LSFLauncher.submit_command = ["/nonexistent/bsub"]
    cluster = ipp.Cluster(engines="lsf", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=30)
    with pytest.raises(LauncherError, match="not found: is LSF installed"):
        cluster.start_and_connect_sync()
    assert_nothing_left(str(tmp_path / "p"), [], None)


def test_start_timeout_names_the_queued_job(tmp_path):
    c = Config()
    c.LSFLauncher.queue = "hold"
    cluster = ipp.Cluster(engines="lsf", n=1, profile_dir=str(tmp_path / "p"), config=c, engine_timeout=3)
    with pytest.raises(TimeoutError, match=r"0 of 1 engines.*still queued: LSF job \d+"):
        cluster.start_and_connect_sync()
    assert not cluster.running
    assert not active_jobs()
    assert_nothing_left(str(tmp_path / "p"), [], None)
