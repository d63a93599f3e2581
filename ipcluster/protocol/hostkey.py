"""Whether two processes share a host *and* a network namespace (so 127.0.0.1 reaches both)."""

from __future__ import annotations

import functools
import os
import socket


@functools.lru_cache(maxsize=1)
def host_key() -> str:
    """``hostname|boot id|network namespace`` of this process.

    Two processes with the same key can reach each other on 127.0.0.1: same machine (boot id),
    same loopback (network namespace).  Where the Linux files are missing, the hostname alone
    is used, which errs on the safe side only if hostnames are unique.
    """
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
    except OSError:
        parts.append("")
    try:
        parts.append(str(os.stat("/proc/self/ns/net").st_ino))
    except OSError:
        parts.append("")
    return "|".join(parts)
