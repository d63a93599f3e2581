"""Profile configuration: ``<profile_dir>/ipcluster_config.py``, as in IPython profiles.

The file is run by traitlets' :class:`~traitlets.config.loader.PyFileConfigLoader` with ``c`` (or
``get_config()``) bound to a :class:`~traitlets.config.Config`, so::

    c.Cluster.n = 3
    c.LocalControllerLauncher.controller_args = ["--heartbeat-period", "1"]

works.  Values from the file sit *under* a ``config=`` given to ``Cluster``, which sits under
explicit constructor arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

from ipcluster.errors import ClusterError

CONFIG_FILE_NAME = "ipcluster_config.py"


def load_profile_config(profile_dir: str | os.PathLike[str]) -> Config:
    """The config in *profile_dir*'s ``ipcluster_config.py`` (an empty Config when absent)."""
    path = Path(profile_dir) / CONFIG_FILE_NAME
    if not path.is_file():
        return Config()
    loader = PyFileConfigLoader(CONFIG_FILE_NAME, path=str(profile_dir))
    try:
        return loader.load_config()
    except ConfigFileNotFound:
        return Config()
    except Exception as e:
        raise ClusterError(f"error in {path}: {type(e).__name__}: {e}") from e


def merged_config(profile_dir: str | os.PathLike[str], config: Config | None = None) -> Config:
    """The profile's config with *config* merged over it."""
    merged = load_profile_config(profile_dir)
    if config:
        merged.merge(config)
    return merged
