"""The benchmark script runs, cleans up and prints well-formed JSON lines (no performance thresholds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "run.py"
KEYS = {"system", "workload", "op", "unit", "median", "p10", "p90", "n"}


def _run(args: list[str], tmp_path: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    ipdir = tmp_path / "ipython"
    ipdir.mkdir(exist_ok=True)
    tmp = tmp_path / "tmp"  # run.py makes its private IPYTHONDIR under $TMPDIR
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, IPYTHONDIR=str(ipdir), TMPDIR=str(tmp))
    return subprocess.run([sys.executable, str(RUN), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(120)
def test_quick_subset_prints_json_lines(tmp_path):
    out_file = tmp_path / "bench.json"
    proc = _run(["--quick", "--only", "floor_zmq,apply_rtt,push_pull", "--json", str(out_file)],
                tmp_path, timeout=110)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"

    lines = proc.stdout.splitlines()
    assert lines, proc.stderr
    records = [json.loads(line) for line in lines]
    for rec in records:
        assert KEYS <= rec.keys(), rec
        assert rec["n"] >= 1
        assert rec["p10"] <= rec["median"] <= rec["p90"], rec
        assert rec["median"] > 0, rec

    seen = {(r["workload"], r["op"]) for r in records}
    assert ("apply_rtt", "apply_sync") in seen
    assert ("zmq_rtt", "dealer_router_echo") in seen
    for op in ("push", "pull"):
        assert ("push_pull_1MiB", op) in seen
        assert ("push_pull_32MiB", op) in seen
    assert all(r["unit"] == "GB/s" for r in records if r["workload"].startswith("push_pull"))

    saved = json.loads(out_file.read_text())
    assert saved["results"] == records
    assert saved["failed"] == {}
    assert saved["machine"]["nproc"] >= 1

    # the table on stderr names every workload that ran
    assert "apply_rtt" in proc.stderr and "push_pull_32MiB" in proc.stderr
    # the run used (and removed) its own IPYTHONDIR: nothing written to ours, nothing left in $TMPDIR
    assert list((tmp_path / "ipython").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []
    # no controller or engine outlived the run (they all name a file under tmp_path)
    deadline = time.monotonic() + 10
    while (left := _processes_mentioning(str(tmp_path))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"


def _processes_mentioning(text: str) -> list[str]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if text in cmd:
            out.append(f"{p.info['pid']}: {cmd[:200]}")
    return out


def test_unknown_workload_is_rejected(tmp_path):
    proc = _run(["--only", "no_such_workload"], tmp_path, timeout=30)
    assert proc.returncode != 0
    assert "unknown workload" in proc.stderr
    assert proc.stdout == ""


def test_list_names_every_workload(tmp_path):
    proc = _run(["--list"], tmp_path, timeout=30)
    assert proc.returncode == 0
    names = proc.stdout.split()
    for name in ("cold_start_2", "apply_rtt", "apply_all", "push_pull", "scatter_gather", "map_200x10ms",
                 "floor_zmq", "floor_memcpy"):
        assert name in names
