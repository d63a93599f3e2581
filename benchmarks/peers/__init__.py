"""Peers measured by the suite beside ipcluster: ipyparallel and Dask distributed (both optional)."""

from __future__ import annotations

import importlib.util
import sys

#: peer name -> (module that must be importable, pip requirement that installs it)
PEERS: dict[str, tuple[str, str]] = {
    "ipyparallel": ("ipyparallel", "ipyparallel"),
    "dask": ("distributed", "dask[distributed]"),
}


def installed(name: str) -> bool:
    """Whether peer *name* can be imported here (without importing it).  A module blocked in
    ``sys.modules`` (set to None, which makes its import fail) counts as not installed."""
    module = PEERS[name][0]
    if module in sys.modules and sys.modules[module] is None:
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version(name: str) -> str:
    """The installed version of peer *name*."""
    from importlib.metadata import version as dist_version

    return dist_version(PEERS[name][0])
