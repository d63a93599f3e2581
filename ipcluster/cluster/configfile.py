"""A commented default ``ipcluster_config.py`` for a profile (``ipcluster config``).

The file lists every option of :class:`~ipcluster.cluster.Cluster` and of the built-in
launchers, with its help text and default, all commented out; uncomment and edit what you need.
It is generated from the classes' traits, so it always matches the installed version.  An option
is listed under the most general class users configure it on (``c.SlurmLauncher.account``, not
again under ``c.SlurmEngineSetLauncher``).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from traitlets.config import Configurable

from ipcluster.cluster.config import CONFIG_FILE_NAME
from ipcluster.errors import ClusterError

HEADER = """\
# Configuration file for ipcluster (`ipcluster start`, `ipcluster engines`, ipcluster.Cluster).
#
# Every option is listed with its help text and default, commented out.  Choose launchers with
#   c.Cluster.engine_launcher_class = "slurm"      # local, mpi, ssh, slurm, sge, pbs, lsf, htcondor, batch
#   c.Cluster.controller_launcher_class = "local"
# Options of a common base class (c.SlurmLauncher.account) apply to its controller and engine
# launchers alike; a subclass's section (c.SlurmEngineSetLauncher.account) wins over it.

c = get_config()  # noqa
"""


def config_classes() -> list[type[Configurable]]:
    """Cluster and every built-in launcher class, bases before subclasses, each once."""
    from ipcluster.cluster.cluster import Cluster
    from ipcluster.cluster.launchers import BUILTIN, find_launcher_class
    from ipcluster.cluster.launchers.base import BaseLauncher
    from ipcluster.errors import LauncherError

    found: list[type[Configurable]] = [Cluster]
    for kind in ("controller", "engines"):
        for name in BUILTIN[kind]:
            try:
                cls = find_launcher_class(kind, name)  # type: ignore[arg-type]
            except (LauncherError, ImportError):
                continue  # a launcher whose module cannot be imported here is left out
            for base in reversed(cls.__mro__):
                if (isinstance(base, type) and issubclass(base, Configurable) and base not in found
                        and base.__module__.startswith("ipcluster.") and base is not BaseLauncher):
                    found.append(base)
    return found


def _comment(text: str) -> list[str]:
    return ["## " + line if i == 0 else "#  " + line
            for i, line in enumerate(textwrap.wrap(" ".join(text.split()), 76) or [""])]


def class_section(cls: type[Configurable], shown: dict[type, set[str]]) -> str:
    """The options of *cls* not already listed under a base class in *shown* (updated), or "".

    The generic batch classes (``Batch*``) do not hide their options from the scheduler classes:
    a user configures ``c.SlurmLauncher.account``, so that is where ``account`` must appear.
    """
    hidden: set[str] = set()
    for base in cls.__mro__[1:]:
        if base in shown and not base.__name__.startswith("Batch"):
            hidden |= shown[base]
    traits = {name: t for name, t in cls.class_traits(config=True).items() if name not in hidden}
    shown[cls] = set(traits) | hidden
    if not traits:
        return ""
    bases = ", ".join(b.__name__ for b in cls.__bases__ if issubclass(b, Configurable))
    rule = "#" + "-" * 78
    lines = [rule, f"# {cls.__name__}({bases}) configuration", rule]
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    if doc:
        lines += _comment(doc) + [""]
    for name, trait in sorted(traits.items()):
        if trait.help:
            lines += _comment(trait.help)
        lines.append(f"#  Default: {trait.default_value_repr()}")
        lines.append(f"# c.{cls.__name__}.{name} = {trait.default_value_repr()}")
        lines.append("")
    return "\n".join(lines)


def default_config_text() -> str:
    """The commented default config file."""
    shown: dict[type, set[str]] = {}
    sections = [text for text in (class_section(cls, shown) for cls in config_classes()) if text]
    return HEADER + "\n" + "\n\n".join(sections) + "\n"


def write_default_config(profile_dir: str | os.PathLike[str], force: bool = False) -> Path:
    """Write the default config to ``<profile_dir>/ipcluster_config.py``; return its path.

    Raises :class:`~ipcluster.errors.ClusterError` if the file exists and *force* is false.
    """
    path = Path(profile_dir) / CONFIG_FILE_NAME
    if path.exists() and not force:
        raise ClusterError(f"{path} already exists (use --force to overwrite it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(default_config_text())
    os.replace(tmp, path)
    return path
