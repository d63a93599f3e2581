"""Whether a blocking call busy-polls is decided by how many engines the call went to, not by how
many are still to answer (BlockingCalls.run with real zmq sockets over inproc, engines played by a thread)."""

from __future__ import annotations

import concurrent.futures
import threading
import types

import pytest
import zmq

from ipcluster.client import blocking, spin

pytestmark = pytest.mark.timeout(30)


class FakeClient:
    """What BlockingCalls needs of a Client: the connection's size limit and the reply handler."""

    def __init__(self, futures: dict[bytes, concurrent.futures.Future]) -> None:
        self.connection_info = types.SimpleNamespace(max_message_size=1 << 20)
        self.futures = futures

    def _on_engine_message(self, frames: list) -> None:
        self.futures[frames[0].bytes].set_result(frames[1].bytes)


def run_call(n: int, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Send one request to each of *n* engines through BlockingCalls.run; engines answer one at a
    time, each after the previous answer was taken.  Returns the spin flag of every wait."""
    monkeypatch.setattr(spin, "CPUS", 2)  # 4 * 2 = 8 processes at most for polling to pay
    flags: list[bool] = []
    real_poll = spin.SpinWait.poll

    def recording_poll(self, poller, timeout_ms, spinning=True):
        flags.append(spinning)
        return real_poll(self, poller, timeout_ms, spinning)

    monkeypatch.setattr(spin.SpinWait, "poll", recording_poll)
    ctx = zmq.Context()
    routers, futures = [], {}
    try:
        for i in range(n):
            r = ctx.socket(zmq.ROUTER)
            r.bind(f"inproc://engine-{i}")
            routers.append(r)
        ids = [b"e%d" % i for i in range(n)]
        futs = [concurrent.futures.Future() for _ in ids]
        futures.update(zip(ids, futs))
        calls = blocking.BlockingCalls(FakeClient(futures), ctx)

        def engines() -> None:
            requests = [r.recv_multipart() for r in routers]
            for req, r, fut in zip(requests, routers, futs):
                r.send_multipart([req[0], req[1], b"done"])  # [peer, echoed id, reply]
                concurrent.futures.wait([fut], timeout=10)  # the next answer once this one was handled

        t = threading.Thread(target=engines)
        t.start()
        calls.run(ids, [f"inproc://engine-{i}" for i in range(n)], [[i, i] for i in ids], futs)
        t.join(10)
        assert [f.result(0) for f in futs] == [b"done"] * n
        calls.close()
    finally:
        for r in routers:
            r.close(linger=0)
        ctx.term()
    return flags


def test_a_call_on_many_engines_never_polls_busily_even_when_few_are_left(monkeypatch):
    flags = run_call(12, monkeypatch)
    assert flags and not any(flags)


def test_a_call_on_few_engines_may_poll_busily(monkeypatch):
    flags = run_call(3, monkeypatch)
    assert flags and all(flags)
