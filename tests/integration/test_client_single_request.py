"""A call on one target returns an AsyncResult that is its request's own future: the whole public
behaviour of such results, through a load-balanced view and a DirectView on one engine."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf

import pytest

import ipcluster as ipp
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


def add(a, b=10):
    return a + b


def fail():
    raise KeyError("missing")


def slow(t):
    import time

    time.sleep(t)
    return t


@pytest.fixture(params=["load-balanced", "engine 1"])
def view(request, rc):
    return rc.load_balanced_view() if request.param == "load-balanced" else rc[1]


def test_values_errors_and_metadata(rc, view):
    ar = view.apply_async(add, 1, b=2)
    assert isinstance(ar, ipp.AsyncResult) and isinstance(ar, cf.Future)
    assert ar.get(timeout=20) == 3 and ar.result() == 3 and ar.successful()
    assert ar._children == [ar] and len(ar.msg_ids) == 1
    md = ar.metadata
    assert md["status"] == "ok" and md.engine_id in rc.ids and md.completed >= md.started >= md.submitted
    assert rc.metadata[ar.msg_ids[0]] is md and rc.results[ar.msg_ids[0]] == 3
    assert ar.get_dict() == {md.engine_id: 3}
    if isinstance(view, ipp.DirectView):
        assert md.engine_id == 1
    err = view.apply_async(fail)
    with pytest.raises(KeyError):
        err.get(timeout=20)
    assert isinstance(err.exception(), ipp.RemoteError) and not err.successful()


def test_waiting_as_completed_callbacks_and_await(rc, view):
    ars = [view.apply_async(slow, 0.01 * (i % 3)) for i in range(6)]
    seen = []
    ars[0].add_done_callback(lambda f: seen.append(f.result()))
    assert {f.result() for f in cf.as_completed(ars, timeout=30)} == {0.0, 0.01, 0.02}
    done, pending = cf.wait(ars, timeout=30)
    assert not pending and seen == [0.0]
    assert rc.wait(ars, timeout=30) and view.wait(timeout=30)

    async def main():
        return await view.apply_async(add, 5)

    assert asyncio.run(main()) == 15
    assert rc.get_result(ars[1].msg_ids[0]).get(timeout=10) == 0.01
    assert all(ar.ready() for ar in ars) and all(ar.elapsed >= 0 for ar in ars)


def block_engine(path):
    import pathlib
    import time

    pathlib.Path(path).touch()
    time.sleep(1.0)
    return "ran"


def test_abort_of_a_queued_request(rc, tmp_path):
    view = rc[0]
    marker = tmp_path / "running"
    running = view.apply_async(block_engine, str(marker))
    wait_for(marker.exists, what="the first request to run")
    queued = view.apply_async(add, 1)  # queued on engine 0 behind the running one
    queued.abort()
    with pytest.raises(ipp.TaskAborted):
        queued.get(timeout=20)
    assert running.get(timeout=20) == "ran"
