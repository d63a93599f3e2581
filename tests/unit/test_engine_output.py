"""Output capture: batching, the flush rule, ordering, and background-thread writes."""

from __future__ import annotations

import io
import sys
import threading

import pytest

from engines.output import FLUSH_BYTES, FLUSH_INTERVAL, OutputRouter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def wire():
    sent = []
    clock = Clock()
    router = OutputRouter(lambda t, c, p, i: sent.append((t, c, p, i)), fallback=io.StringIO(), clock=clock)
    router.set_parent({"msg_id": "req1"}, [b"client"])
    return router, sent, clock


def texts(sent):
    return [(c["name"], c["text"]) for t, c, p, i in sent if t == "stream"]


def test_first_line_goes_out_at_once_then_batches(wire):
    router, sent, clock = wire
    print("working...", file=router.stdout)  # two writes: text, then "\n"
    assert texts(sent) == [("stdout", "working...\n")]
    clock.now += FLUSH_INTERVAL / 10
    print("more", file=router.stdout)
    print("and more", file=router.stdout)
    assert len(sent) == 1  # within the interval: buffered
    clock.now += FLUSH_INTERVAL
    router.stdout.write("partial")
    assert len(sent) == 1  # interval passed, but no line end yet
    router.stdout.write(" line\n")
    assert texts(sent)[1] == ("stdout", "more\nand more\npartial line\n")


def test_each_requests_first_line_goes_out_at_once(wire):
    router, sent, clock = wire
    print("one", file=router.stdout)
    router.flush()  # end of request 1
    router.set_parent({"msg_id": "req2"}, [b"client"])
    print("two", file=router.stdout)  # right after the previous flush, but a new request
    assert texts(sent) == [("stdout", "one\n"), ("stdout", "two\n")]
    assert sent[1][2] == {"msg_id": "req2"}


def test_big_buffer_flushes_without_waiting(wire):
    router, sent, clock = wire
    router.stdout.write("x\n")
    router.stdout.write("y" * (FLUSH_BYTES - 1))
    assert len(sent) == 1
    router.stdout.write("z")
    assert len(sent) == 2 and len(sent[1][1]["text"]) == FLUSH_BYTES


def test_flush_sends_everything_to_the_request_route(wire):
    router, sent, clock = wire
    router.stdout.write("a\n")
    clock.now += 0.001
    router.stdout.write("b")
    router.flush()
    assert texts(sent) == [("stdout", "a\n"), ("stdout", "b")]
    assert all(p == {"msg_id": "req1"} and i == [b"client"] for _, _, p, i in sent)
    router.flush()
    assert len(sent) == 2  # nothing left


def test_streams_interleave_in_write_order(wire):
    router, sent, clock = wire
    router.stdout.write("1\n")
    clock.now += 0.001
    router.stdout.write("2")
    router.stderr.write("3")
    router.stdout.write("4")
    router.flush()
    assert texts(sent) == [("stdout", "1\n"), ("stdout", "2"), ("stderr", "3"), ("stdout", "4")]


def test_publish_flushes_streams_first(wire):
    router, sent, clock = wire
    router.stdout.write("a\n")
    clock.now += 0.001
    router.stdout.write("before display")
    router.publish("display_data", {"data": {"text/plain": "x"}, "metadata": {}})
    assert [t for t, *_ in sent] == ["stream", "stream", "display_data"]
    assert sent[1][1]["text"] == "before display"


def test_new_request_flushes_the_previous_ones_output(wire):
    router, sent, clock = wire
    router.stdout.write("a\n")
    clock.now += 0.001
    router.stdout.write("late")
    router.set_parent({"msg_id": "req2"}, [b"other"])
    assert sent[-1][1]["text"] == "late" and sent[-1][2] == {"msg_id": "req1"}


def test_other_threads_only_buffer(wire):
    router, sent, clock = wire
    t = threading.Thread(target=lambda: (print("from thread", file=router.stdout), router.stdout.flush()))
    t.start()
    t.join()
    assert sent == []
    router.flush()  # the main loop's idle flush
    assert texts(sent) == [("stdout", "from thread\n")]
    assert sent[0][2] == {"msg_id": "req1"}


def test_without_a_request_text_goes_to_the_fallback():
    sent = []
    fallback = io.StringIO()
    router = OutputRouter(lambda *a: sent.append(a), fallback=fallback)
    router.stdout.write("early\n")
    router.flush()
    assert sent == [] and fallback.getvalue() == "early\n"


def test_send_failure_does_not_reach_user_code():
    def broken(*a):
        raise OSError("socket gone")

    router = OutputRouter(broken)
    router.set_parent({"msg_id": "r"}, [])
    router.stdout.write("x\n")  # must not raise
    router.flush()


def test_stream_is_a_text_file():
    router = OutputRouter(lambda *a: None)
    s = router.stdout
    assert s.writable() and not s.isatty() and s.encoding == "utf-8"
    with pytest.raises(io.UnsupportedOperation):
        s.fileno()
    with pytest.raises(TypeError):
        s.write(b"bytes")


def test_install_and_uninstall():
    sent = []
    router = OutputRouter(lambda t, c, p, i: sent.append(c))
    router.set_parent({"msg_id": "r"}, [])
    saved = sys.stdout, sys.stderr
    router.install()
    try:
        assert sys.stdout is router.stdout and sys.stderr is router.stderr
        print("captured")
    finally:
        router.uninstall()
    assert (sys.stdout, sys.stderr) == saved
    assert "".join(c["text"] for c in sent) == "captured\n"
