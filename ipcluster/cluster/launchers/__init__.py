"""Launchers: how a cluster's controller and engines get started (see :mod:`.base`).

Launchers are found by name.  Built-in ones are listed here; others register an entry point in
the group ``ipcluster.controller_launchers`` or ``ipcluster.engine_launchers``, e.g. in a
``pyproject.toml``::

    [project.entry-points."ipcluster.engine_launchers"]
    slurm = "mypkg.slurm:SlurmEngineSetLauncher"

A dotted import path (``"mypkg.slurm.SlurmEngineSetLauncher"``) or a class also works.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Literal

from ipcluster.errors import LauncherError

if TYPE_CHECKING:  # pragma: no cover
    from ipcluster.cluster.launchers.base import BaseLauncher

Kind = Literal["controller", "engines"]

#: Batch-scheduler launchers: name -> (module in .batch, class-name prefix).
_BATCH = {
    "batch": ("base", "Batch"),
    "slurm": ("slurm", "Slurm"),
    "sge": ("sge", "SGE"),
    "pbs": ("pbs", "PBS"),
    "lsf": ("lsf", "LSF"),
    "htcondor": ("htcondor", "HTCondor"),
}

#: Built-in launchers by kind and name, as ``"module:Class"``.
BUILTIN: dict[str, dict[str, str]] = {
    "controller": {
        "local": "ipcluster.cluster.launchers.local:LocalControllerLauncher",
        "ssh": "ipcluster.cluster.launchers.sshcontroller:SSHControllerLauncher",
        "mpi": "ipcluster.cluster.launchers.mpi:MPIControllerLauncher",
        **{name: f"ipcluster.cluster.launchers.batch.{module}:{prefix}ControllerLauncher"
           for name, (module, prefix) in _BATCH.items()},
    },
    "engines": {
        "local": "ipcluster.cluster.launchers.local:LocalEngineSetLauncher",
        "ssh": "ipcluster.cluster.launchers.sshengines:SSHEngineSetLauncher",
        "mpi": "ipcluster.cluster.launchers.mpi:MPIEngineSetLauncher",
        **{name: f"ipcluster.cluster.launchers.batch.{module}:{prefix}EngineSetLauncher"
           for name, (module, prefix) in _BATCH.items()},
    },
}

ENTRY_POINT_GROUPS = {
    "controller": "ipcluster.controller_launchers",
    "engines": "ipcluster.engine_launchers",
}


def _import(spec: str) -> type:
    module, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def _entry_points(kind: Kind) -> list:  # type: ignore[type-arg]
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUPS[kind]))


def available_launchers(kind: Kind) -> list[str]:
    """Names of the launchers of *kind* (built-in and installed through entry points)."""
    names = set(BUILTIN[kind])
    names.update(ep.name for ep in _entry_points(kind))
    return sorted(names)


def find_launcher_class(kind: Kind, name: "str | type[BaseLauncher]") -> "type[BaseLauncher]":
    """The launcher class of *kind* called *name* (a registered name, a dotted path or a class)."""
    from ipcluster.cluster.launchers.base import BaseLauncher

    if isinstance(name, type):
        cls = name
    else:
        key = name.lower()
        if key in BUILTIN[kind]:
            cls = _import(BUILTIN[kind][key])
        else:
            eps = [ep for ep in _entry_points(kind) if ep.name.lower() == key]
            if eps:
                cls = eps[0].load()
            elif "." in name:
                try:
                    cls = _import(name)
                except (ImportError, AttributeError) as e:
                    raise LauncherError(f"cannot import {kind} launcher {name!r}: {e}") from None
            else:
                raise LauncherError(
                    f"unknown {kind} launcher {name!r}; available: {', '.join(available_launchers(kind))}"
                )
    if not (isinstance(cls, type) and issubclass(cls, BaseLauncher)):
        raise LauncherError(f"{name!r} is not a launcher class")
    return cls


__all__ = ["BUILTIN", "ENTRY_POINT_GROUPS", "available_launchers", "find_launcher_class"]
