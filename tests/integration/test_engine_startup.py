"""``<profile_dir>/ipengine_config.py`` end to end: a real controller and engines on 127.0.0.1."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for

import ipcluster


def write_config(pdir: Path, text: str) -> Path:
    pdir.mkdir(parents=True, exist_ok=True)
    path = pdir / "ipengine_config.py"
    path.write_text(text)
    return path


def engine_log(cluster: ipcluster.Cluster) -> str:
    return Path(cluster.engines["0"].log_path).read_text()


def test_startup_code_and_work_dir_apply_to_every_engine(tmp_path, ipdir, no_leaked_processes):
    pdir = tmp_path / "profile"
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "setup_engine.py"
    script.write_text("import os\nfrom_script = startup_value + 1\nscript_pid = os.getpid()\n")
    write_config(pdir, f"""
c.IPEngine.startup_command = "startup_value = 42"
c.IPEngine.startup_script = {str(script)!r}
c.IPEngine.work_dir = {str(work)!r}
""")
    with ipcluster.Cluster(n=2, profile_dir=str(pdir)) as rc:
        dview = rc[:]
        assert dview.pull("startup_value", block=True) == [42, 42]
        assert dview.pull("from_script", block=True) == [43, 43]
        dview.execute("doubled = startup_value * 2", block=True)  # IPython's shell keeps the names
        assert dview.pull("doubled", block=True) == [84, 84]
        pids = dview.apply_sync(os.getpid)
        assert dview.pull("script_pid", block=True) == pids  # ran in each engine, not the supervisor
        assert len(set(pids)) == 2
        assert dview.apply_sync(os.getcwd) == [str(work)] * 2


def test_failing_startup_code_is_logged_and_the_engines_serve(tmp_path, ipdir, no_leaked_processes):
    pdir = tmp_path / "profile"
    write_config(pdir, 'c.IPEngine.startup_command = "before = 1\\nundefined_name"\n')
    cluster = ipcluster.Cluster(n=2, profile_dir=str(pdir))
    with cluster as rc:
        assert rc[:].pull("before", block=True) == [1, 1]
        assert rc[:].apply_sync(sum, [1, 2]) == [3, 3]
        wait_for(lambda: engine_log(cluster).count("NameError: name 'undefined_name'") == 2,
                 what="both engines' startup errors in the log")
        text = engine_log(cluster)
        assert text.count("startup_command failed") == 2
        assert 'File "<startup_command>", line 2' in text


@pytest.mark.parametrize("text, error", [
    ("c.IPEngine.startup_command = 'x = 1'\nraise RuntimeError('broken engine config')\n",
     "RuntimeError: broken engine config"),
    ("c.IPEngine.startup_command = (\n", "SyntaxError"),
])
def test_broken_config_file_fails_the_start_at_once(tmp_path, ipdir, no_leaked_processes, text, error):
    pdir = tmp_path / "profile"
    path = write_config(pdir, text)
    cluster = ipcluster.Cluster(n=2, profile_dir=str(pdir), engine_timeout=60)
    t0 = time.monotonic()
    try:
        with pytest.raises(ipcluster.LauncherError) as info:
            cluster.start_and_connect_sync()
    finally:
        cluster.stop_cluster_sync()
    assert time.monotonic() - t0 < 15  # noticed, not waited out
    assert info.value.returncode == 2
    assert f"error in {path}" in str(info.value) and error in str(info.value)
