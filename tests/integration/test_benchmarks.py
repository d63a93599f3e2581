"""The benchmark script runs, cleans up and prints well-formed JSON lines (no performance thresholds),
on ipcluster and on the peers that are installed."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "run.py"
KEYS = {"system", "workload", "op", "unit", "median", "p10", "p90", "n"}


def _run(args: list[str], tmp_path: Path, timeout: float, block: str | None = None) -> subprocess.CompletedProcess[str]:
    """run.py with *args*, its $IPYTHONDIR and $TMPDIR under *tmp_path*; *block*: a module made
    unimportable (as if not installed)."""
    ipdir = tmp_path / "ipython"
    ipdir.mkdir(exist_ok=True)
    tmp = tmp_path / "tmp"  # run.py makes its private IPYTHONDIR under $TMPDIR
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, IPYTHONDIR=str(ipdir), TMPDIR=str(tmp))
    if block:
        code = (f"import runpy, sys; sys.modules[{block!r}] = None; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
        cmd = [sys.executable, "-c", code, str(RUN), *args]
    else:
        cmd = [sys.executable, str(RUN), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def _records(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert lines, proc.stderr
    records = [json.loads(line) for line in lines]
    for rec in records:
        assert KEYS <= rec.keys(), rec
        assert rec["n"] >= 1
        assert rec["p10"] <= rec["median"] <= rec["p90"], rec
        assert rec["median"] > 0, rec
    return records


def _assert_clean(tmp_path: Path) -> None:
    """The run used (and removed) its own IPYTHONDIR: nothing written to ours, nothing left in
    $TMPDIR, and no process naming a file under tmp_path outlived it."""
    assert list((tmp_path / "ipython").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []
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


@pytest.mark.timeout(120)
def test_quick_subset_prints_json_lines(tmp_path):
    out_file = tmp_path / "bench.json"
    proc = _run(["--quick", "--only", "floor_zmq,apply_rtt,push_pull", "--json", str(out_file)],
                tmp_path, timeout=110)
    records = _records(proc)
    assert {r["system"] for r in records} == {"ipcluster", "pyzmq"}

    seen = {(r["workload"], r["op"]) for r in records}
    assert ("apply_rtt", "apply_sync") in seen
    assert ("zmq_rtt", "dealer_router_echo") in seen
    for op in ("push", "pull", "echo"):
        assert ("push_pull_1MiB", op) in seen
        assert ("push_pull_32MiB", op) in seen
    assert all(r["unit"] == "GB/s" for r in records if r["workload"].startswith("push_pull"))

    saved = json.loads(out_file.read_text())
    assert saved["results"] == records
    assert saved["failed"] == {}
    assert saved["peers"] == [] and saved["comparisons"] == []
    assert saved["machine"]["nproc"] >= 1

    # the table on stderr names every workload that ran, with the better direction of its unit
    assert "apply_rtt" in proc.stderr and "push_pull_32MiB" in proc.stderr
    assert "better" in proc.stderr and "lower" in proc.stderr and "higher" in proc.stderr
    _assert_clean(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_rest_of_the_suite(tmp_path):
    """Every other workload once, quick (no peers)."""
    out_file = tmp_path / "bench.json"
    proc = _run(["--quick", "--only", "floor_memcpy,cold_start_2,apply_all,broadcast,scatter_gather,"
                 "map_200x10ms,lb_,memory", "--json", str(out_file)], tmp_path, timeout=170)
    records = _records(proc)
    workloads = {r["workload"] for r in records}
    for name in ("memcpy_100MiB", "cold_start_2", "apply_all_2", "apply_all_8", "broadcast_100MiB",
                 "scatter_gather_1e6", "map_200x10ms", "lb_rtt", "lb_map_10k", "lb_apply_async_10k",
                 "lb_map_200x10ms", "memory"):
        assert name in workloads, name
    mem = {r["op"]: r for r in records if r["workload"] == "memory"}
    assert mem["controller"]["unit"] == "MiB" and mem["controller"]["processes"] >= 1
    assert mem["engine"]["median"] > 1
    saved = json.loads(out_file.read_text())
    assert {(s["system"], s["workload"]) for s in saved["skipped"]} == {("ipcluster", "apply_all_32")}
    _assert_clean(tmp_path)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


PEER_MODULES = {"dask": "distributed", "ipyparallel": "ipyparallel"}


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("peer", ["dask", "ipyparallel"])
def test_peer_runs_beside_ipcluster(tmp_path, peer):
    if not _installed(PEER_MODULES[peer]):
        pytest.skip(f"{peer} is not installed (pip install -e '.[bench]')")
    out_file = tmp_path / "bench.json"
    proc = _run(["--quick", "--only", "apply_rtt", "--peers", peer, "--json", str(out_file)],
                tmp_path, timeout=140)
    records = _records(proc)
    assert [(r["system"], r["workload"]) for r in records] == [("ipcluster", "apply_rtt"), (peer, "apply_rtt")]
    saved = json.loads(out_file.read_text())
    assert saved["peers"] == [peer]
    assert saved["machine"][peer]  # its version
    [cmp] = saved["comparisons"]
    assert cmp["best_peer"] == peer and cmp["better"] == "lower"
    # factor > 1: ipcluster is that many times better; the table says so in words
    assert cmp["factor"] == pytest.approx(records[1]["median"] / records[0]["median"], rel=0.01)
    assert f"than {peer}" in proc.stderr
    _assert_clean(tmp_path)


@pytest.mark.timeout(60)
def test_missing_peer_is_skipped_not_failed(tmp_path):
    proc = _run(["--quick", "--only", "floor_memcpy", "--peers", "dask"], tmp_path, timeout=50,
                block="distributed")
    records = _records(proc)
    assert {r["system"] for r in records} == {"numpy"}
    skips = [line for line in proc.stderr.splitlines() if "skipped dask" in line]
    assert len(skips) == 1 and "not installed" in skips[0], proc.stderr


@pytest.mark.timeout(90)
def test_interrupted_run_stops_its_cluster_and_fails(tmp_path):
    """SIGINT while a workload starts its cluster: exit status 1, "interrupted", nothing left."""
    ipdir, tmp = tmp_path / "ipython", tmp_path / "tmp"
    ipdir.mkdir()
    tmp.mkdir()
    env = dict(os.environ, IPYTHONDIR=str(ipdir), TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, str(RUN), "--only", "apply_rtt"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # ends when the process closes stderr
            lines.append(line)
            if line.startswith("# apply_rtt on ipcluster ..."):
                proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 1, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any("FAILED interrupted" in line for line in lines), "".join(lines)
    _assert_clean(tmp_path)


def test_unknown_peer_is_rejected(tmp_path):
    proc = _run(["--peers", "spark"], tmp_path, timeout=30)
    assert proc.returncode != 0
    assert "unknown peer 'spark'" in proc.stderr
    assert proc.stdout == ""


def test_unknown_workload_is_rejected(tmp_path):
    proc = _run(["--only", "no_such_workload"], tmp_path, timeout=30)
    assert proc.returncode != 0
    assert "unknown workload" in proc.stderr
    assert proc.stdout == ""


def test_list_names_every_workload(tmp_path):
    proc = _run(["--list"], tmp_path, timeout=30)
    assert proc.returncode == 0
    names = proc.stdout.split()
    for name in ("cold_start_2", "apply_rtt", "apply_all", "push_pull", "broadcast", "scatter_gather",
                 "map_200x10ms", "lb_rtt", "lb_throughput", "memory", "floor_zmq", "floor_memcpy"):
        assert name in names


# --- the comparison with peers, on made-up records ----------------------------------------------


def _report():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return report


def _rec(system: str, unit: str, median: float, workload: str = "w", op: str = "op") -> dict:
    return {"system": system, "workload": workload, "op": op, "unit": unit,
            "median": median, "p10": median, "p90": median, "n": 1}


def test_comparison_takes_the_best_peer_in_the_units_direction():
    report = _report()
    # lower is better (ms): the best peer is the fastest one
    [c] = report.compare([_rec("ipcluster", "ms", 0.5), _rec("ipyparallel", "ms", 3.0), _rec("dask", "ms", 1.0)])
    assert (c["best_peer"], c["factor"], c["better"]) == ("dask", 2.0, "lower")
    assert report.describe(c) == "2.00x better than dask"
    # higher is better (GB/s): ipcluster below the best peer is worse by best / ipcluster
    [c] = report.compare([_rec("ipcluster", "GB/s", 1.0), _rec("ipyparallel", "GB/s", 0.5), _rec("dask", "GB/s", 4.0)])
    assert (c["best_peer"], c["factor"], c["better"]) == ("dask", 0.25, "higher")
    assert report.describe(c) == "4.00x worse than dask"
    # figures compare only with the same workload, op and unit; floors are not peers
    assert report.compare([_rec("ipcluster", "ms", 1.0), _rec("dask", "ms", 2.0, op="other"),
                           _rec("pyzmq", "ms", 0.1)]) == []


def test_table_groups_each_figure_and_marks_targets():
    report = _report()
    recs = [_rec("ipcluster", "ms", 0.2, "apply_rtt", "apply_sync"), _rec("ipcluster", "s", 1.0, "x", "y"),
            _rec("dask", "ms", 1.0, "apply_rtt", "apply_sync")]
    rows = report.table_rows(recs)
    assert [r[:2] for r in rows[1:]] == [("ipcluster", "apply_rtt"), ("dask", "apply_rtt"), ("ipcluster", "x")]
    assert rows[1][-2] == "5.00x better than dask" and rows[1][-1] == "<= 0.3 ok"
    assert rows[2][-2:] == ("", "")
    assert report.markdown(recs).splitlines()[0].startswith("| system | workload |")


def test_a_size_that_does_not_fit_in_memory_is_skipped():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import measure
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    avail = psutil.virtual_memory().available
    measure.check_free_memory(avail // 8)  # fits four times over: no exception
    with pytest.raises(measure.Skipped, match="GiB available"):
        measure.check_free_memory(avail)
    assert [t.label for t in measure.transfers(quick=False)] == ["1MiB", "100MiB", "1GiB"]
    assert [t.label for t in measure.transfers(quick=True)] == ["1MiB", "32MiB"]
