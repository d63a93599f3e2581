"""Every file in examples/ runs to completion on a small local cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, ipython_dir, no_leaked_processes):
    if path.name.startswith("mpi_"):
        from tests.launchers.batch_fixtures import mpi_skip_reason

        if mpi_skip_reason():
            pytest.skip(mpi_skip_reason())
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=path.parent)
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), f"{path.name} printed nothing"
