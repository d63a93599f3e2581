"""ipyparallel as a system of the suite.

ipcluster's client API follows ipyparallel's names, so run.py runs the same workload code on both;
this module supplies what differs: how a cluster is made and how its controller is recognised.
The cluster's profile lives under ``$IPYTHONDIR``, which run.py points at a private temporary
directory before anything starts (checked here, so a cluster never writes to ``~/.ipython``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

#: A substring of the command line of ipyparallel's controller processes (the hub and its schedulers).
CONTROLLER_MARKER = "-m ipyparallel.controller"


def make_cluster(n: int) -> Any:
    """An unstarted ``ipyparallel.Cluster`` of *n* local engines, logging errors only."""
    import ipyparallel

    ipdir = os.environ.get("IPYTHONDIR", "")
    if not ipdir or not os.path.isdir(ipdir):
        raise RuntimeError("IPYTHONDIR must name an existing private directory before an "
                           "ipyparallel cluster starts")
    return ipyparallel.Cluster(n=n, log_level=logging.ERROR,
                               profile_dir=os.path.join(ipdir, "profile_bench"))
