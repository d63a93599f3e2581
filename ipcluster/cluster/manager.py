"""``ClusterManager``: the clusters recorded under ``$IPYTHONDIR``, across profiles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ipcluster.cluster import state
from ipcluster.errors import ClusterError, ClusterNotFound

if TYPE_CHECKING:  # pragma: no cover
    from ipcluster.cluster.cluster import Cluster


class ClusterManager:
    """Find clusters by their cluster files.

    Keys are ``"profile:cluster_id"`` (see :func:`ipcluster.cluster.state.cluster_key`).

    Parameters
    ----------
    ipython_dir:
        Where the profiles live (default ``$IPYTHONDIR`` or ``~/.ipython``).
    """

    def __init__(self, ipython_dir: str | os.PathLike[str] | None = None):
        self.ipython_dir = ipython_dir

    def _files(self, profile: str | None) -> list[Path]:
        return [f for d in state.profile_dirs(self.ipython_dir, profile) for f in state.cluster_files(d)]

    def load_clusters(self, profile: str | None = None, running_only: bool = False) -> dict[str, "Cluster"]:
        """Every recorded cluster (of *profile*, when given) by key, attached to its processes."""
        from ipcluster.cluster.cluster import Cluster

        clusters: dict[str, Cluster] = {}
        for path in self._files(profile):
            try:
                cluster = Cluster.from_file(cluster_file=path, allow_stopped=not running_only)
            except ClusterError:  # unreadable, not a cluster file or not running
                continue
            clusters[cluster.key] = cluster
        return clusters

    def list_clusters(self, profile: str | None = None, running_only: bool = False) -> list[str]:
        """Keys of the recorded clusters."""
        return list(self.load_clusters(profile, running_only))

    def get_cluster(self, key: str) -> "Cluster":
        """The running cluster called *key* (``"profile:cluster_id"``); ClusterNotFound otherwise."""
        from ipcluster.cluster.cluster import Cluster

        profile, cluster_id = state.parse_cluster_key(key)
        pdir = state.resolve_profile_dir(profile, ipython_dir_=self.ipython_dir)
        return Cluster.from_file(profile=profile, cluster_id=cluster_id, profile_dir=pdir)

    def clean(self, profile: str | None = None) -> list[Path]:
        """Remove cluster and connection files whose processes are gone; return the removed paths."""
        removed: list[Path] = []
        for key, cluster in self.load_clusters(profile).items():
            if not cluster.running and state.remove_file(cluster.cluster_file):
                removed.append(cluster.cluster_file)
        live_clusters = {str(c.connection_file) for c in self.load_clusters(profile).values() if c.running}
        for d in state.profile_dirs(self.ipython_dir, profile):
            for conn in state.connection_files(d):
                if str(conn) in live_clusters or state.controller_alive(conn):
                    continue
                if state.remove_connection_file(conn):
                    removed.append(conn)
        return removed

    def __repr__(self) -> str:
        return f"<ClusterManager {self.ipython_dir or state.ipython_dir()}>"


__all__ = ["ClusterManager", "ClusterNotFound"]
