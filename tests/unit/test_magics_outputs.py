"""How the parallel magics collect and show engine outputs (real tracker and IPython shell, no sockets)."""

from __future__ import annotations

import concurrent.futures

import pytest

from ipcluster.client.asyncresult import AsyncResult
from ipcluster.client.tracker import RequestTracker
from ipcluster.magics.outputs import DONE, LineStreamer, Output, RunOutputs, show_outputs
from ipcluster.magics.parallel import _autopx_transformer
from ipcluster.protocol.session import Message
from tests.ipython_shell import interactive_shell


@pytest.fixture
def shell():
    with interactive_shell() as sh:
        yield sh


def out(msg_id, msg_type, idents=(), **content):
    return Message({"msg_type": msg_type, "msg_id": "o"}, {"msg_id": msg_id}, {}, content, [], list(idents))


def reply(msg_id, engine_id):
    return Message({"msg_type": "execute_reply", "msg_id": "r"}, {"msg_id": msg_id}, {"engine_id": engine_id},
                   {"status": "ok"})


class FakeClient:
    def __init__(self):
        self._tracker = RequestTracker()
        self._engines = {0: b"uuid-0", 1: b"uuid-1"}


def stream(engine, text, name="stdout"):
    return Output(engine, name, {"name": name, "text": text})


def display(engine, text):
    return Output(engine, "display", {"data": {"text/plain": text}, "metadata": {}})


def result(engine, text, count=3):
    return Output(engine, "result", {"data": {"text/plain": text}, "execution_count": count, "metadata": {}})


EVENTS = [
    stream(1, "b1\n"), stream(0, "a1\n"), display(0, "fig-a1"), stream(0, "a2\n"), display(1, "fig-b1"),
    stream(0, "oops\n", "stderr"), display(0, "fig-a2"), display(1, "fig-b2"), result(1, "42"),
    result(0, "multi\nline"),
]


def test_group_by_type(shell, capsys):
    show_outputs(EVENTS, "type")
    o, e = capsys.readouterr()
    assert o.splitlines() == [
        "[stdout:0] ", "a1", "a2", "[stdout:1] b1",
        "[output:0]", "fig-a1", "fig-a2", "[output:1]", "fig-b1", "fig-b2",
        "Out[0:3]: ", "multi", "line", "Out[1:3]: 42",
    ]
    assert e == "[stderr:0] oops\n"


def test_group_by_order_collates_rich_output(shell, capsys):
    show_outputs(EVENTS, "order")
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("[output:0]")
    assert lines[start:start + 8] == ["[output:0]", "fig-a1", "[output:1]", "fig-b1",
                                      "[output:0]", "fig-a2", "[output:1]", "fig-b2"]


def test_group_by_engine_keeps_each_engines_order(shell, capsys):
    show_outputs(EVENTS, "engine")
    o, e = capsys.readouterr()
    assert o.splitlines() == [
        "[stdout:0] a1", "[output:0]", "fig-a1", "[stdout:0] a2", "fig-a2", "Out[0:3]: ", "multi", "line",
        "[stdout:1] b1", "[output:1]", "fig-b1", "fig-b2", "Out[1:3]: 42",
    ]
    assert e == "[stderr:0] oops\n"


def test_streamed_run_shows_only_values_at_the_end(shell, capsys):
    show_outputs(EVENTS, "type", streamed=True)
    assert capsys.readouterr().out.splitlines() == ["Out[0:3]: ", "multi", "line", "Out[1:3]: 42"]


def test_rich_values_are_displayed_under_the_prompt(shell, capsys):
    shown = []
    shell.display_pub.publish = lambda data, metadata=None, **kw: shown.append(data)
    show_outputs([Output(0, "result", {"data": {"text/plain": "T", "text/html": "<b>T</b>"},
                                       "execution_count": 2, "metadata": {}})], "type")
    assert capsys.readouterr().out == "Out[0:2]:\n"
    assert shown == [{"text/plain": "T", "text/html": "<b>T</b>"}]


def test_line_streamer_labels_whole_lines(capsys):
    s = LineStreamer()
    s.feed(stream(0, "par"))
    s.feed(stream(1, "x\ny\n"))
    s.feed(stream(0, "tial\nnext"))
    s.feed(stream(1, "warn", "stderr"))
    s.feed(display(0, "ignored"))
    assert capsys.readouterr().out == "[stdout:1] x\n[stdout:1] y\n[stdout:0] partial\n"
    s.finish()
    o, e = capsys.readouterr()
    assert (o, e) == ("[stdout:0] next\n", "[stderr:1] warn\n")


def test_run_outputs_keeps_its_own_requests_in_order_from_before_bind():
    client = FakeClient()
    t = client._tracker
    run = RunOutputs(client)
    run.attach()
    futs = [t.register("m0", b"uuid-0", 0), t.register("m1", b"uuid-1", 1), t.register("other", b"uuid-0", 0)]
    t.on_output(out("m0", "stream", name="stdout", text="early"))  # before bind: kept
    ar = AsyncResult(client, ["m0", "m1"], futs[:2], fname="execute")
    run.bind(ar)
    t.on_output(out("other", "stream", name="stdout", text="not ours"))
    t.on_output(out("m1", "display_data", data={"text/plain": "d"}, metadata={}))
    t.on_output(out("m1", "stream", name="stderr", text="e"))
    t.on_output(out("m0", "execute_result", data={"text/plain": "1"}, execution_count=1, metadata={}))
    t.on_output(out("m0", "error", ename="X", evalue="", traceback=[]))
    assert [(o.engine, o.kind) for o in run.events] == [
        (0, "stdout"), (1, "display"), (1, "stderr"), (0, "result"), (0, "error")]
    t.on_reply(reply("m0", 0))
    assert run.queue.qsize() == 5
    t.on_reply(reply("m1", 1))
    items = [run.queue.get_nowait() for _ in range(6)]
    assert items[-1] is DONE and items[:-1] == run.events
    assert t._output_hooks == ()  # done: no longer listening
    t.on_output(out("m0", "stream", name="stdout", text="late"))
    assert len(run.events) == 5


def test_run_outputs_names_a_tasks_engine_by_its_route():
    client = FakeClient()
    t = client._tracker
    run = RunOutputs(client)
    run.attach()
    fut = t.register("task", b"scheduler", None)
    ar = AsyncResult(client, ["task"], [fut], fname="execute", single=True)
    run.bind(ar)
    t.on_output(out("task", "stream", idents=[b"uuid-1"], name="stdout", text="x"))
    t.on_output(out("task", "stream", name="stdout", text="y"))  # the engine is remembered per request
    assert [o.engine for o in run.events] == [1, 1]
    run2 = RunOutputs(client)
    run2.attach()
    fut2 = t.register("task2", b"scheduler", None)
    ar2 = AsyncResult(client, ["task2"], [fut2], fname="execute", single=True)
    run2.bind(ar2)
    t.on_output(out("task2", "stream", name="stdout", text="no route"))
    t.on_reply(reply("task2", 0))
    assert [o.engine for o in run2.events] == [None]
    run2.fill_engines(ar2)  # the reply said where it ran
    assert [o.engine for o in run2.events] == [0]
    concurrent.futures.wait([ar2], timeout=1)


def test_a_failing_hook_does_not_stop_the_tracker():
    t = RequestTracker()
    t.add_output_hook(lambda msg: 1 / 0)
    fut = t.register("m", b"e", 0)
    t.on_output(out("m", "stream", name="stdout", text="x"))
    t.on_reply(reply("m", 0))
    assert fut.result(0) is None and t.metadata["m"]["stdout"] == "x"


def test_autopx_transformer_wraps_cells_but_not_the_toggle():
    tr = _autopx_transformer("px_a", "autopx_a")
    assert tr(["%autopx_a\n"]) == ["%autopx_a\n"]
    assert tr(["  \n"]) == ["  \n"]
    assert tr(["%autopx\n"]) != ["%autopx\n"]  # another suffix's toggle is code for the engines
    wrapped = tr(["x = 1\n", "print('a\\n')\n"])
    assert wrapped == ["get_ipython().run_cell_magic('px_a', '', \"x = 1\\nprint('a\\\\n')\\n\")\n"]
    assert tr.has_side_effects


def test_remote_errors_render_as_engine_tracebacks_in_ipython():
    from ipcluster import errors

    tb = "Traceback (most recent call last):\n  File x\nZeroDivisionError: division by zero"
    e0 = errors.make_remote_error("ZeroDivisionError", "division by zero", tb,
                                  {"engine_id": 0, "method": "execute"}, original_type=ZeroDivisionError)
    assert isinstance(e0, ZeroDivisionError)
    assert e0._render_traceback_() == ["[0:execute]: ", *tb.splitlines()]
    e1 = errors.RemoteError("KeyError", "'k'", "", {"engine_id": 1, "method": "apply"})
    comp = errors.CompositeError("one or more exceptions raised in execute", [e0, e1])
    lines = comp._render_traceback_()
    assert lines[0] == "[0:execute]: " and "[1:apply]: " in lines
    assert lines[-1] == "CompositeError: one or more exceptions raised in execute"
