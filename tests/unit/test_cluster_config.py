"""Profile config (ipcluster_config.py), traits, launcher registry and arguments (no subprocesses)."""

from __future__ import annotations

import sys

import pytest
from traitlets.config import Config

from ipcluster.cluster.cluster import Cluster
from ipcluster.cluster.config import load_profile_config
from ipcluster.cluster.launchers import available_launchers, find_launcher_class
from ipcluster.cluster.launchers.base import BaseLauncher
from ipcluster.cluster.launchers.local import LocalControllerLauncher, LocalEngineSetLauncher
from ipcluster.errors import ClusterError, LauncherError


def write_profile_config(ipdir, profile: str, text: str):
    pdir = ipdir / f"profile_{profile}"
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "ipcluster_config.py").write_text(text)
    return pdir


def test_profile_config_is_loaded(ipdir):
    write_profile_config(ipdir, "cfg", "c.Cluster.n = 3\nc.Cluster.controller_ip = '0.0.0.0'\n")
    c = Cluster(profile="cfg")
    assert c.n == 3
    assert c.controller_ip == "0.0.0.0"
    assert Cluster(profile="default").n is None  # other profiles are unaffected


def test_get_config_spelling_works(ipdir):
    write_profile_config(ipdir, "gc", "c = get_config()\nc.Cluster.engine_timeout = 5\n")
    assert Cluster(profile="gc").engine_timeout == 5


def test_config_argument_overrides_profile_and_kwargs_override_both(ipdir):
    write_profile_config(ipdir, "layers", "c.Cluster.n = 3\nc.Cluster.log_level = 'DEBUG'\n")
    cfg = Config()
    cfg.Cluster.n = 5
    c = Cluster(profile="layers", config=cfg)
    assert c.n == 5 and c.log_level == "DEBUG"
    assert Cluster(profile="layers", config=cfg, n=7).n == 7


def test_profile_from_config_argument(ipdir):
    write_profile_config(ipdir, "viacfg", "c.Cluster.n = 4\n")
    cfg = Config()
    cfg.Cluster.profile = "viacfg"
    assert Cluster(config=cfg).n == 4


def test_profile_dir_argument_loads_its_config(tmp_path, ipdir):
    pdir = tmp_path / "somewhere"
    pdir.mkdir()
    (pdir / "ipcluster_config.py").write_text("c.Cluster.n = 6\n")
    assert Cluster(profile_dir=pdir).n == 6


def test_broken_profile_config_is_a_cluster_error(ipdir):
    pdir = write_profile_config(ipdir, "broken", "c.Cluster.n = (\n")
    with pytest.raises(ClusterError, match="ipcluster_config.py"):
        load_profile_config(pdir)


def test_launcher_config_reaches_launchers(ipdir):
    write_profile_config(
        ipdir, "lc",
        "c.LocalControllerLauncher.controller_args = ['--heartbeat-period', '1']\n"
        "c.LocalEngineSetLauncher.engine_args = ['--log-level', 'DEBUG']\n",
    )
    c = Cluster(profile="lc", cluster_id="x", controller_location="10.0.0.1")
    ctl = LocalControllerLauncher(parent=c, profile_dir=c.profile_dir, cluster_id="x",
                                  log_path="/tmp/c.log", ip=c.controller_ip,
                                  location=c.controller_location, log_level=c.log_level)
    args = ctl.build_args()
    assert args[:4] == [sys.executable, "-P", "-m", "controller"]
    assert args[args.index("--profile-dir") + 1] == c.profile_dir
    assert args[args.index("--cluster-id") + 1] == "x"
    assert args[args.index("--ip") + 1] == "127.0.0.1"
    assert args[args.index("--location") + 1] == "10.0.0.1"
    assert args[args.index("--log-level") + 1] == "INFO"
    assert args[-2:] == ["--heartbeat-period", "1"]

    eng = LocalEngineSetLauncher(parent=c, n=3, connection_file="/x/conn.json", log_path="/x/e.log")
    args = eng.build_args()
    assert args[:4] == [sys.executable, "-P", "-m", "engines"]
    assert args[4:10] == ["--file", "/x/conn.json", "-n", "3", "--log-file", "/x/e.log"]
    assert args[-2:] == ["--log-level", "DEBUG"]


def test_log_level_accepts_numbers_and_rejects_nonsense(ipdir):
    assert Cluster(log_level=10).log_level == "DEBUG"
    assert Cluster(log_level="warning").log_level == "WARNING"
    with pytest.raises(Exception):
        Cluster(log_level="LOUD")


def test_registry():
    assert find_launcher_class("controller", "local") is LocalControllerLauncher
    assert find_launcher_class("engines", "Local") is LocalEngineSetLauncher
    assert find_launcher_class("engines", LocalEngineSetLauncher) is LocalEngineSetLauncher
    dotted = "ipcluster.cluster.launchers.local.LocalEngineSetLauncher"
    assert find_launcher_class("engines", dotted) is LocalEngineSetLauncher
    assert "local" in available_launchers("engines")
    with pytest.raises(LauncherError, match="available: .*local"):
        find_launcher_class("engines", "nosuch")
    with pytest.raises(LauncherError):
        find_launcher_class("engines", "os.path.join")


def test_launcher_classes_selected_by_config(ipdir):
    class MyEngines(LocalEngineSetLauncher):
        pass

    c = Cluster(engine_launcher_class=MyEngines)
    assert find_launcher_class("engines", c.engine_launcher_class) is MyEngines
    assert issubclass(find_launcher_class("controller", c.controller_launcher_class), BaseLauncher)


def test_launcher_options_are_filtered_to_known_traits(ipdir):
    class Minimal(BaseLauncher):
        pass

    opts = Cluster()._launcher_options(Minimal, profile_dir="/p", ip="1.2.3.4", n=3)
    assert opts == {"profile_dir": "/p"}


def test_log_paths_live_in_the_profile(ipdir):
    c = Cluster(cluster_id="abc")
    p = c._log_path("controller")
    assert p.startswith(str(ipdir / "profile_default" / "log"))
    assert p.endswith("-controller.log") and "ipcluster-abc-" in p
    assert "ipcluster--" not in Cluster(cluster_id="")._log_path("controller")


class _DeadEngineSet:
    """An engine set whose supervisor has already exited."""

    n = 2
    running = False


def test_engines_of_a_dead_supervisor_are_still_expected(tmp_path, ipdir):
    """A supervisor that died before the wait must make it fail, not shrink it to zero engines."""
    cluster = Cluster(n=2, profile_dir=str(tmp_path / "p"))
    cluster.engines["set"] = _DeadEngineSet()
    assert cluster._expected_engines() == 2
    cluster._attached = True  # attached to a cluster started elsewhere: only live sets count
    assert cluster._expected_engines() == 0
