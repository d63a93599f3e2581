"""SCHED_BATCH for controller and engine processes (``ipcluster.schedpolicy``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ipcluster.schedpolicy import ENV, use_batch_scheduling

linux = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux-only")

# starts from the default policy whatever the test process runs under (unless chrt chose one)
PROBE = ("import os, threading, ipcluster.schedpolicy as s; "
         "os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0)) if os.environ.get('PROBE_RESET') else None; "
         "done = s.use_batch_scheduling(); "
         "t = threading.Thread(target=lambda: print(os.sched_getscheduler(0))); "
         "print(done, os.sched_getscheduler(0)); t.start(); t.join()")


def run_probe(env: dict[str, str], prefix: list[str] = ()) -> list[str]:
    out = subprocess.run([*prefix, sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, "PROBE_RESET": "" if prefix else "1", **env}, timeout=30, check=True)
    return out.stdout.split()


@linux
def test_the_process_and_its_later_threads_run_as_batch():
    done, main, thread = run_probe({ENV: "1"})
    assert done == "True" and int(main) == os.SCHED_BATCH and int(thread) == os.SCHED_BATCH


@linux
def test_opt_out_keeps_the_default_policy():
    done, main, thread = run_probe({ENV: "0"})
    assert done == "False" and int(main) == os.SCHED_OTHER == int(thread)


@linux
def test_a_process_under_another_policy_is_left_alone():
    done, main, _ = run_probe({ENV: "1"}, prefix=["chrt", "--idle", "0"])
    assert done == "False" and int(main) == os.SCHED_IDLE


def test_without_sched_batch_nothing_happens(monkeypatch):
    monkeypatch.delattr(os, "SCHED_BATCH", raising=False)
    assert use_batch_scheduling() is False
