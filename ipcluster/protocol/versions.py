"""What a process reports about itself at registration, and the compatibility rule."""

from __future__ import annotations

import sys
from typing import Any

from ipcluster.protocol.session import PROTOCOL_VERSION


def local_versions() -> dict[str, Any]:
    """Versions and import paths of this process's ipcluster installation."""
    import ipcluster

    return {
        "ipcluster": getattr(ipcluster, "__version__", None),
        "ipcluster_path": getattr(ipcluster, "__file__", None),
        "protocol": PROTOCOL_VERSION,
        "python": "%d.%d" % sys.version_info[:2],
    }


def incompatibility(mine: dict[str, Any], theirs: dict[str, Any], who: str = "engine") -> str | None:
    """A sentence naming the mismatch between two :func:`local_versions` dicts, or ``None``."""
    problems = []
    if theirs.get("ipcluster") is None:
        problems.append(
            f"the {who} imported an 'ipcluster' without a version from {theirs.get('ipcluster_path')!r}"
            " (is a file or folder named ipcluster shadowing the package?)"
        )
    elif theirs.get("ipcluster") != mine.get("ipcluster"):
        problems.append(
            f"ipcluster {theirs.get('ipcluster')} at {theirs.get('ipcluster_path')!r} on the {who} vs "
            f"{mine.get('ipcluster')} at {mine.get('ipcluster_path')!r} on the controller"
        )
    if theirs.get("protocol") != mine.get("protocol"):
        problems.append(f"protocol {theirs.get('protocol')} vs {mine.get('protocol')}")
    if theirs.get("python") != mine.get("python"):
        problems.append(f"Python {theirs.get('python')} on the {who} vs {mine.get('python')} on the controller")
    for key in ("controller_path", "engines_path"):
        path = theirs.get(key)
        if path is not None and not str(path).endswith("__init__.py"):
            problems.append(f"{key.split('_')[0]} package shadowed by {path!r}")
    return "; ".join(problems) or None
