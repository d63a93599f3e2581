"""Choosing and configuring launchers: Cluster(engines=, controller=), the default config file,
``ipcluster config``."""

from __future__ import annotations

import pytest
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

import ipcluster as ipp
from ipcluster.cli import main
from ipcluster.cluster.configfile import default_config_text, write_default_config
from ipcluster.cluster.launchers import available_launchers, find_launcher_class
from ipcluster.errors import ClusterError


def test_every_backend_is_registered():
    for kind in ("controller", "engines"):
        names = available_launchers(kind)
        for name in ("local", "mpi", "slurm", "sge", "pbs", "lsf", "htcondor", "batch"):
            assert name in names
    assert find_launcher_class("engines", "SLURM").__name__ == "SlurmEngineSetLauncher"
    assert find_launcher_class("controller", "htcondor").__name__ == "HTCondorControllerLauncher"


def test_cluster_shorthands(tmp_path):
    cluster = ipp.Cluster(engines="slurm", controller="mpi", n=3, profile_dir=str(tmp_path))
    assert cluster.engine_launcher_class == "slurm" and cluster.controller_launcher_class == "mpi"
    assert cluster.engines == {}  # the engine sets, not the launcher name


def test_config_reaches_launchers(tmp_path):
    c = Config()
    c.Cluster.engine_launcher_class = "slurm"
    c.SlurmLauncher.account = "proj"  # a base class's section applies to the subclasses
    c.SlurmEngineSetLauncher.queue = "short"
    cluster = ipp.Cluster(profile_dir=str(tmp_path), config=c)
    cls = find_launcher_class("engines", cluster.engine_launcher_class)
    launcher = cls(parent=cluster, n=1)
    assert (launcher.account, launcher.queue) == ("proj", "short")


def test_default_config_lists_the_options_and_loads(tmp_path):
    text = default_config_text()
    for line in ("# c.MPILauncher.mpi_args = []", "# c.SlurmLauncher.account = ''",
                 "# c.BatchLauncher.queue = ''", "# c.Cluster.engine_launcher_class = 'local'",
                 "# c.LSFLauncher.submit_command = ['bsub']"):
        assert line in text
    assert "## Extra arguments for mpi_cmd" in text  # help text comes along
    assert "# c.SlurmLauncher.timelimit = ''" in text and "c.SlurmEngineSetLauncher.timelimit" not in text
    assert "# c.SlurmEngineSetLauncher.engine_args = []" in text
    path = write_default_config(tmp_path)
    config = PyFileConfigLoader(path.name, path=str(tmp_path)).load_config()
    assert not config  # everything is commented out
    with pytest.raises(ClusterError, match="already exists"):
        write_default_config(tmp_path)
    write_default_config(tmp_path, force=True)


def test_ipcluster_config_command(tmp_path, capsys):
    assert main(["config", "--profile-dir", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "ipcluster_config.py").exists()
    assert main(["config", "--profile-dir", str(tmp_path / "p")]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["config", "--stdout"]) == 0
    assert "c.SlurmLauncher.timelimit" in capsys.readouterr().out


def test_engines_command_without_a_cluster(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    assert main(["engines", "-n", "2"]) == 1
    assert "ipcluster start" in capsys.readouterr().err


def test_unknown_launcher_name():
    from ipcluster.errors import LauncherError

    with pytest.raises(LauncherError, match="unknown engines launcher 'slurmm'.*slurm"):
        find_launcher_class("engines", "slurmm")


@pytest.mark.parametrize("name", ["local", "mpi", "slurm", "sge", "pbs", "lsf", "htcondor"])
def test_every_controller_launcher_passes_every_controller_option(name):
    from ipcluster.cluster.launchers import find_launcher_class

    cls = find_launcher_class("controller", name)
    launcher = cls(profile_dir="/p", cluster_id="c", ip="0.0.0.0", location="10.0.0.1", log_level="DEBUG",
                   enable_curve=True, curve_allowed_keys=["K1"], controller_args=["--hwm=1"])
    args = launcher.build_args() if hasattr(launcher, "build_args") else launcher.program()
    joined = " ".join(args)
    for part in ("--ip 0.0.0.0", "--location 10.0.0.1", "--log-level DEBUG", "--enable-curve",
                 "--curve-allow=K1", "--hwm=1", "--cluster-id c"):
        assert part in joined, (name, part, joined)
