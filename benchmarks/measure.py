"""Measurement helpers shared by every system the suite runs (ipcluster, its peers, the floors).

Each figure becomes one record: a dict with ``system``, ``workload``, ``op``, ``unit`` and the
``median`` / ``p10`` / ``p90`` / ``n`` of the timed repeats, plus optional extra keys.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

MiB = 1 << 20
GiB = 1 << 30
GB = 1e9

#: Units where a larger figure is better; every other unit (ms, s, MiB) is better when smaller.
HIGHER_IS_BETTER = frozenset({"GB/s", "tasks/s", "ratio"})


def higher_is_better(unit: str) -> bool:
    """Whether a larger figure in *unit* is the better one."""
    return unit in HIGHER_IS_BETTER


def stats(samples: list[float]) -> dict[str, Any]:
    """median / p10 / p90 / n of *samples* (already in the reported unit)."""
    if not samples:
        raise ValueError("no samples")
    if len(samples) >= 2:
        deciles = statistics.quantiles(samples, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = samples[0]
    return {
        "median": _round(statistics.median(samples)),
        "p10": _round(p10),
        "p90": _round(p90),
        "n": len(samples),
    }


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def timeit(fn: Callable[[], Any], repeat: int, warmup: int) -> list[float]:
    """Seconds per call of *fn*, *repeat* samples after *warmup* untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    pc = time.perf_counter
    for _ in range(repeat):
        t0 = pc()
        fn()
        out.append(pc() - t0)
    return out


def record(system: str, workload: str, op: str, unit: str, samples: list[float], **extra: Any) -> dict:
    """One result record (see the module docstring)."""
    rec = {"system": system, "workload": workload, "op": op, "unit": unit, **stats(samples)}
    rec.update(extra)
    return rec


def ms(samples: list[float]) -> list[float]:
    """Seconds to milliseconds."""
    return [s * 1e3 for s in samples]


def gbps(nbytes: int, samples: list[float]) -> list[float]:
    """Seconds per transfer of *nbytes* to GB/s (1 GB = 1e9 bytes)."""
    return [nbytes / s / GB for s in samples]


def rate(count: int, samples: list[float]) -> list[float]:
    """Seconds per batch of *count* tasks to tasks per second."""
    return [count / s for s in samples]


class Skipped(Exception):
    """A workload (or part of one) that cannot run here; the reason is reported, not a failure."""


# --- sizes and repeats, the same for every system --------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """One array size of the push / pull / echo workload."""

    mib: int
    repeat: int
    warmup: int

    @property
    def label(self) -> str:
        return f"{self.mib // 1024}GiB" if self.mib >= 1024 else f"{self.mib}MiB"


def transfers(quick: bool) -> list[Transfer]:
    """Array sizes for push / pull / echo (1 GiB only in the full run)."""
    if quick:
        return [Transfer(1, 30, 3), Transfer(32, 5, 1)]
    return [Transfer(1, 100, 5), Transfer(100, 7, 2), Transfer(1024, 3, 1)]


def check_free_memory(nbytes: int, factor: int = 4) -> None:
    """Raise :class:`Skipped` if less than *factor* x *nbytes* of memory is available."""
    import psutil

    avail = psutil.virtual_memory().available
    if avail < factor * nbytes:
        raise Skipped(f"needs {factor} x {nbytes / GiB:.2f} GiB free memory, "
                      f"{avail / GiB:.2f} GiB available")


def rtt_repeat(quick: bool) -> int:
    """Repeats of a single round trip."""
    return 300 if quick else 2000


def throughput_tasks(quick: bool) -> int:
    """Tasks per batch of the throughput workload."""
    return 2_000 if quick else 10_000


def apply_all_engines(quick: bool) -> list[int]:
    """Cluster sizes of the apply-on-all workload (32 engines only in the full run)."""
    return [2, 8] if quick else [2, 8, 32]


BROADCAST_MIB = 100
SCATTER_SIZE = {True: 10**6, False: 10**7}
MAP_TASKS, MAP_ENGINES, MAP_SLEEP = 200, 2, 0.01
