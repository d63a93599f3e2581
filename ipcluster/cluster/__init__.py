"""Starting and stopping clusters: :class:`Cluster`, :class:`ClusterManager`, launchers.

Submodules:

* :mod:`.cluster` — the :class:`Cluster` API;
* :mod:`.manager` — :class:`ClusterManager`, every cluster recorded under ``$IPYTHONDIR``;
* :mod:`.launchers` — how controllers and engines are started (local, ssh, mpi, batch schedulers);
* :mod:`.state` — cluster files: reading, writing, finding;
* :mod:`.config` — ``ipcluster_config.py`` in a profile; :mod:`.configfile` — its commented default;
* :mod:`.syncrun` — blocking twins of coroutines that also work inside a running event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ipcluster.cluster.cluster import Cluster
    from ipcluster.cluster.manager import ClusterManager

__all__ = ["Cluster", "ClusterManager"]


def __getattr__(name: str) -> Any:
    if name == "Cluster":
        from ipcluster.cluster.cluster import Cluster

        return Cluster
    if name == "ClusterManager":
        from ipcluster.cluster.manager import ClusterManager

        return ClusterManager
    raise AttributeError(f"module 'ipcluster.cluster' has no attribute {name!r}")
