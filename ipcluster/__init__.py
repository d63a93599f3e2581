"""ipcluster: parallel computing with stateful Python engines.

Start a cluster and drive it::

    import ipcluster as ipp

    with ipp.Cluster(n=4) as rc:
        print(rc[:].apply_sync(lambda: 42))

Names are loaded lazily so ``import ipcluster`` stays cheap and never imports IPython, the
controller or the engines.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "ipcluster.client.client",
    "DirectView": "ipcluster.client.view",
    "LoadBalancedView": "ipcluster.client.lbview",
    "BroadcastView": "ipcluster.client.broadcast",
    "Dependency": "ipcluster.client.dependency",
    "require": "ipcluster.client.dependency", "depend": "ipcluster.client.dependency",
    "View": "ipcluster.client.view",
    "AsyncResult": "ipcluster.client.asyncresult",
    "AsyncMapResult": "ipcluster.client.asyncresult",
    "interactive": "ipcluster.client.remotefunction",
    "remote": "ipcluster.client.remotefunction",
    "parallel": "ipcluster.client.remotefunction",
    "Cluster": "ipcluster.cluster.cluster",
    "ClusterManager": "ipcluster.cluster.cluster",
    "register_joblib_backend": "ipcluster.joblib_backend",
    "load_ipython_extension": "ipcluster.magics",
    "unload_ipython_extension": "ipcluster.magics",
}
_ERRORS = {
    "IPClusterError", "RemoteError", "CompositeError", "EngineError", "EngineDied", "TimeoutError",
    "ProtocolError", "InvalidSignature", "ReplayedMessage", "MalformedMessage", "LauncherError",
    "ClusterError", "AlreadyRunning", "ClusterNotFound", "NoEnginesRegistered", "ConnectionFileError",
    "VersionMismatch", "ControllerError", "TaskAborted", "TaskTimeout", "DependencyError",
    "InvalidDependency", "ImpossibleDependency", "UnmetDependency", "TaskCancelled", "TaskKilledEngines",
}

__all__ = sorted([*_LAZY, *_ERRORS, "__version__"])

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from ipcluster.client.asyncresult import AsyncMapResult, AsyncResult
    from ipcluster.client.broadcast import BroadcastView
    from ipcluster.client.client import Client
    from ipcluster.client.dependency import Dependency
    from ipcluster.client.lbview import LoadBalancedView
    from ipcluster.client.remotefunction import interactive, parallel, remote
    from ipcluster.client.view import DirectView, View
    from ipcluster.cluster.cluster import Cluster, ClusterManager
    from ipcluster.errors import *  # noqa: F403
    from ipcluster.joblib_backend import register_joblib_backend
    from ipcluster.magics import load_ipython_extension, unload_ipython_extension


def __getattr__(name: str) -> Any:
    if name in _ERRORS:
        from ipcluster import errors

        return getattr(errors, name)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ipcluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

