"""The joblib backend: ``joblib.Parallel`` running on the engines of a real cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ipcluster

joblib = pytest.importorskip("joblib")

ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _restore_joblib_backends():
    """Registrations are process-wide in joblib: undo the ones a test made."""
    saved = dict(joblib.parallel.BACKENDS)
    yield
    joblib.parallel.BACKENDS.clear()
    joblib.parallel.BACKENDS.update(saved)


def pid_and_square(i):
    import os

    return os.getpid(), i * i


def fail_on_three(i):
    if i == 3:
        raise KeyError("three")
    return i


def test_import_ipcluster_does_not_import_joblib():
    code = "import sys, ipcluster; ipcluster.Client; print('joblib' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "False", proc.stderr


def test_parallel_runs_on_the_engines(rc):
    ipcluster.register_joblib_backend()
    lview = rc.load_balanced_view()
    with joblib.parallel_config("ipcluster", view=lview):
        assert joblib.parallel.get_active_backend()[0].effective_n_jobs(-1) == 2
        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(pid_and_square)(i) for i in range(20))
    assert [sq for _, sq in out] == [i * i for i in range(20)]
    pids = {pid for pid, _ in out}
    assert os.getpid() not in pids
    assert pids <= set(rc[:].apply_sync(os.getpid))


def test_view_given_at_registration(rc):
    ipcluster.register_joblib_backend("ipcluster-test", view=rc.load_balanced_view(targets=[0]))
    pid0 = rc[0].apply_sync(os.getpid)
    with joblib.parallel_config("ipcluster-test"):
        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(pid_and_square)(i) for i in range(6))
    assert {pid for pid, _ in out} == {pid0}


def test_task_error_has_its_original_type(rc):
    ipcluster.register_joblib_backend()
    with joblib.parallel_config("ipcluster", view=rc.load_balanced_view()):
        with pytest.raises(KeyError, match="three"):
            joblib.Parallel(n_jobs=-1)(joblib.delayed(fail_on_three)(i) for i in range(8))
        # the backend stays usable after an error
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
    assert rc.load_balanced_view().apply_sync(lambda: "ok") == "ok"


def test_generator_output(rc):
    ipcluster.register_joblib_backend()
    with joblib.parallel_config("ipcluster", view=rc.load_balanced_view()):
        gen = joblib.Parallel(n_jobs=-1, return_as="generator")(joblib.delayed(abs)(-i) for i in range(10))
        assert list(gen) == list(range(10))


def test_default_client_of_the_default_profile(tmp_path, monkeypatch):
    """Without a view the backend connects Client() (default profile) and closes it after the call."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    cluster = ipcluster.Cluster(n=1, profile_dir=str(tmp_path / "ipython" / "profile_default"), cluster_id="")
    rc = cluster.start_and_connect_sync()
    try:
        engine_pid = rc[0].apply_sync(os.getpid)
        ipcluster.register_joblib_backend("ipcluster-default")
        with joblib.parallel_config("ipcluster-default"):
            backend = joblib.parallel.get_active_backend()[0]
            out = joblib.Parallel(n_jobs=-1)(joblib.delayed(pid_and_square)(i) for i in range(5))
            assert backend._owned_client is None  # closed at the end of the call
        assert out == [(engine_pid, i * i) for i in range(5)]
    finally:
        cluster.stop_cluster_sync()  # also closes rc
