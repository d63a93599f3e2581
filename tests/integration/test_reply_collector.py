"""Blocking calls on many engines per CPU (ipcluster/client/collect.py), forced on 2 engines."""

from __future__ import annotations

import threading
import time

import pytest

from ipcluster import errors, interactive
from ipcluster.client import blocking, collect
from tests.conftest import wait_for
from tests.integration.test_blocking_calls import _interrupt_blocking_call, _slow


@pytest.fixture
def collecting(monkeypatch):
    """Every blocking call on raw links waits as on many engines per CPU; counts the collectors."""
    made = []
    real = collect.ReplyCollector

    def counting(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(blocking, "worth_spinning", lambda n: False)
    monkeypatch.setattr(blocking, "ReplyCollector", counting)
    return made


def test_results_and_output_in_engine_order(rc, collecting):
    assert rc[:].apply_sync(interactive(lambda: print("hi from", __import__("os").getpid()) or 7)) == [7, 7]
    assert len(collecting) == 1
    mds = [rc.metadata[m] for m in list(rc.history)[-2:]]
    assert all(md.stdout.startswith("hi from") for md in mds)
    assert [md.engine_id for md in mds] == [0, 1]
    assert not rc.outstanding


def test_output_shows_while_the_call_runs(rc, collecting, tmp_path):
    """Output of one engine is handled while the other still works (not held until the end)."""
    marker = tmp_path / "go"

    def speak_then_wait(path):
        import os
        import time

        print("early", flush=True)
        while not os.path.exists(path):
            time.sleep(0.01)  # the work that waits for the test; the test side waits on an event
        return "done"

    results = []
    t = threading.Thread(target=lambda: results.append(rc[0].apply_sync(speak_then_wait, str(marker))))
    t.start()
    try:
        wait_for(lambda: any(md.stdout == "early\n" for md in list(rc.metadata.values())),
                 timeout=20, what="the output to be handled before the reply")
    finally:
        marker.touch()
        t.join(30)
    assert results == ["done"]


def test_large_replies_through_shared_buffers(rc, collecting):
    np = pytest.importorskip("numpy")
    out = rc[:].apply_sync(interactive(lambda: __import__("numpy").arange(2_000_000, dtype="float64")))
    assert len(out) == 2 and all(np.array_equal(a, np.arange(2_000_000, dtype="float64")) for a in out)


def test_interrupted_call_hands_over_and_completes(rc, collecting, tmp_path):
    marker = tmp_path / "started"
    _interrupt_blocking_call(lambda: rc[:].apply_sync(_slow, str(marker), 1.0), marker)
    interrupted = list(rc.history)[-2:]
    wait_for(lambda: all(m in rc.results for m in interrupted), what="the interrupted call's results")
    assert [rc.results[m] for m in interrupted] == ["slow done", "slow done"]
    assert rc[:].apply_sync(lambda: "after") == ["after", "after"]


def test_engine_death_fails_the_call_without_hanging(fresh_cluster, monkeypatch):
    monkeypatch.setattr(blocking, "worth_spinning", lambda n: False)
    rc = fresh_cluster.connect_client_sync()
    try:
        rc.wait_for_engines(2, timeout=30)
        rc[0].push({"die": True}, block=True)
        rc[1].push({"die": False}, block=True)
        t0 = time.monotonic()
        with pytest.raises(errors.IPClusterError) as info:
            rc[:].apply_sync(interactive(lambda: __import__("os")._exit(9) if die else "alive"))  # noqa: F821
        assert time.monotonic() - t0 < 5
        assert "EngineDied" in str(info.value) or isinstance(info.value, errors.EngineError)
        assert rc[1].apply_sync(lambda: "survivor") == "survivor"
    finally:
        rc.close()
