"""Tasks that note each run in a file, and the check that no task ran twice (restart tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def record_call(i: int, where: str) -> int:
    """Runs on an engine: note that task *i* ran (see :func:`assert_each_ran_at_most_once`)."""
    import os

    with open(os.path.join(where, f"{os.getpid()}.log"), "a") as f:
        f.write(f"{i}\n")
    return 2 * i


def assert_each_ran_at_most_once(where: Path, ars: Sequence[Any]) -> None:
    """No task of *ars* (``record_call(i, where)`` for each index ``i``) ran twice, and each one
    that succeeded ran exactly once."""
    runs: dict[int, int] = {}
    for log in where.iterdir():
        for line in log.read_text().split():
            runs[int(line)] = runs.get(int(line), 0) + 1
    assert max(runs.values()) == 1, "a task ran twice"
    assert all(runs.get(i) == 1 for i, a in enumerate(ars) if a.successful())
