"""The parallel magics in a real IPython ``InteractiveShell`` against a real 2-engine cluster.

Outputs are deterministic without sleeps: a client has every output of a request once it has the
reply, and where a test needs something to happen while a cell runs, the engine waits on a socket
the test answers when it sees the cell's first output.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time

import pytest

import ipcluster
from ipcluster import errors
from ipcluster.magics import magics_for
from tests.ipython_shell import interactive_shell


@pytest.fixture
def ip(shared_cluster):
    """A shell with ``rc`` (a Client of the shared cluster, engines cleared) made inside it."""
    with interactive_shell() as shell:
        shell.user_ns["url_file"] = str(shared_cluster.connection_file)
        ok = shell.run_cell("import ipcluster\nrc = ipcluster.Client(url_file=url_file)\n"
                            "rc.wait_for_engines(2, timeout=30)\nrc.clear(block=True)")
        assert ok.success
        try:
            yield shell
        finally:
            shell.user_ns["rc"].close()


def run(shell, code):
    """Run a cell; return the error it raised (None if it succeeded)."""
    result = shell.run_cell(code)
    return result.error_before_exec or result.error_in_exec


def lines(text):
    """Streamed output, sorted: engines' lines interleave in arrival order."""
    return sorted(text.splitlines())


def test_load_ext_registers_magics_that_ask_for_a_client():
    with interactive_shell() as shell:
        assert run(shell, "%load_ext ipcluster") is None
        for name in ("px", "autopx", "pxresult", "pxconfig"):
            assert name in shell.magics_manager.magics["line"]
        assert "px" in shell.magics_manager.magics["cell"]
        shell.run_cell("%px 1")  # a UsageError is shown, not raised
        assert magics_for(shell).view is None


def test_load_ext_usage_error_text(capsys):
    with interactive_shell() as shell:
        shell.run_cell("%load_ext ipcluster")
        shell.run_cell("%px 1")
    assert "has no view to run on: create an ipcluster.Client()" in capsys.readouterr().err


def test_activate_outside_ipython_is_a_clear_error(rc):
    with pytest.raises(RuntimeError, match="need IPython"):
        rc[:].activate()


def test_client_made_in_ipython_activates_px(ip, capsys):
    assert magics_for(ip).view.client is ip.user_ns["rc"]
    assert run(ip, "%px import os; print('pid', os.getpid())") is None
    out = capsys.readouterr().out
    pids = [ip.user_ns["rc"][e].apply_sync(os.getpid) for e in (0, 1)]
    assert f"[stdout:0] pid {pids[0]}\n" in out and f"[stdout:1] pid {pids[1]}\n" in out


def test_px_line_and_cell_share_the_engine_namespace(ip, capsys):
    run(ip, "%px a = 20")
    assert run(ip, "%%px\nb = a + 1\nprint(b * 2)") is None
    assert lines(capsys.readouterr().out) == ["[stdout:0] 42", "[stdout:1] 42"]
    assert ip.user_ns["rc"][:].pull("b", block=True) == [21, 21]
    assert "a" not in ip.user_ns


CELL = ("%%px --no-stream {opts}\nimport sys\nprint('out', rc_id)\nprint('err', rc_id, file=sys.stderr)\n"
        "display('shown %d' % rc_id)\nrc_id * 10")


def _setup_ids(ip):
    ip.user_ns["rc"][:].scatter("rc_id", [0, 1], flatten=True, block=True)


def test_group_outputs_type(ip, capsys):
    _setup_ids(ip)
    assert run(ip, CELL.format(opts="")) is None
    o, e = capsys.readouterr()
    assert re.fullmatch(r"\[stdout:0\] out 0\n\[stdout:1\] out 1\n\[output:0\]\n'shown 0'\n\[output:1\]\n'shown 1'\n"
                        r"Out\[0:\d+\]: 0\nOut\[1:\d+\]: 10\n", o), o
    assert e == "[stderr:0] err 0\n[stderr:1] err 1\n"


def test_group_outputs_engine(ip, capsys):
    _setup_ids(ip)
    assert run(ip, CELL.format(opts="--group-outputs engine")) is None
    o, e = capsys.readouterr()
    assert re.fullmatch(r"\[stdout:0\] out 0\n\[output:0\]\n'shown 0'\nOut\[0:\d+\]: 0\n"
                        r"\[stdout:1\] out 1\n\[output:1\]\n'shown 1'\nOut\[1:\d+\]: 10\n", o), o
    assert e == "[stderr:0] err 0\n[stderr:1] err 1\n"


def test_group_outputs_order_collates_figures(ip, capsys):
    assert run(ip, "%%px --no-stream --group-outputs=order\nimport os\ndisplay('first'); display('second')") is None
    o, _ = capsys.readouterr()
    assert o == ("[output:0]\n'first'\n[output:1]\n'first'\n[output:0]\n'second'\n[output:1]\n'second'\n")


def test_targets_option(ip, capsys):
    run(ip, "%px --targets 1 print('one')")
    assert capsys.readouterr().out == "[stdout:1] one\n"
    run(ip, "%px -t ::2 print('even')")
    assert capsys.readouterr().out == "[stdout:0] even\n"
    run(ip, "%px --targets [0,1] print('both')")
    assert lines(capsys.readouterr().out) == ["[stdout:0] both", "[stdout:1] both"]
    run(ip, "%%px --targets all\nprint('all')")
    assert lines(capsys.readouterr().out) == ["[stdout:0] all", "[stdout:1] all"]


def test_bad_input_is_a_usage_error_naming_it(ip, capsys):
    for line, message in [("%px --targets 7 1", "engine 7 is not registered"),
                          ("%px --group-outputs x 1", "expected one of type, engine, order"),
                          ("%px", "nothing to run"),
                          ("%%px print(1)\n2", "only options belong on this line"),
                          ("%pxresult", "no non-blocking %px run"),
                          ("%pxresult --targets 0 --local", "takes only --group-outputs, not --targets, --local"),
                          ("%pxconfig --local", "one run only"),
                          ("%pxconfig --targets 9", "engine 9"),
                          ("%autopx now", "takes no arguments")]:
        ip.run_cell(line)
        err = capsys.readouterr().err
        assert "UsageError" in err and message in err, (line, err)


def test_remote_error_on_several_engines_raises_composite_error(ip, capsys):
    exc = run(ip, "%%px\nx = 1\n1/0")
    assert isinstance(exc, errors.CompositeError)
    assert [type(e).__name__ for e in exc.elist] == ["ZeroDivisionError", "ZeroDivisionError"]
    out = capsys.readouterr().out
    assert "[0:execute]: " in out and "[1:execute]: " in out
    assert out.count("ZeroDivisionError: division by zero") == 2
    assert "CompositeError: one or more exceptions raised in execute" in out


def test_remote_error_on_one_engine_raises_the_original_type(ip, capsys):
    exc = run(ip, "%px --targets 1 {}['missing']")
    assert isinstance(exc, KeyError) and isinstance(exc, errors.RemoteError)
    out = capsys.readouterr().out
    assert out.startswith("[1:execute]: ") and "KeyError: 'missing'" in out


def test_output_before_an_error_is_shown(ip, capsys):
    exc = run(ip, "%%px --no-stream\nprint('before')\nraise ValueError('bad')")
    assert isinstance(exc, errors.CompositeError)
    out = capsys.readouterr().out
    assert out.index("[stdout:0] before") < out.index("[0:execute]")


def test_noblock_out_and_pxresult(ip, capsys):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=30)\n"
                "print('got', s.recv(10).decode())")
        assert run(ip, f"%%px --noblock -o res --targets 0\n{code}") is None
        ar = ip.user_ns["res"]
        assert isinstance(ar, ipcluster.AsyncResult)
        assert capsys.readouterr().out == ""  # returned at once, nothing shown yet
        conn, _ = server.accept()
        with conn:
            assert not ar.done()  # the engine waits for us
            conn.sendall(b"go")
            assert run(ip, "%pxresult") is None
    assert capsys.readouterr().out == "[stdout:0] got go\n"
    run(ip, "%pxresult --group-outputs engine")  # shown again on demand
    assert capsys.readouterr().out == "[stdout:0] got go\n"


def test_pxresult_raises_the_runs_error(ip, capsys):
    run(ip, "%px --noblock 1/0")
    assert isinstance(run(ip, "%pxresult"), errors.CompositeError)


def test_stream_shows_output_while_the_cell_runs(ip, capsys, monkeypatch):
    """The engine prints, then waits until the test has seen that line on the screen."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        real = sys.stdout
        answered = []

        class Screen:
            def write(self, text):
                if "[stdout:0] first" in text and not answered:
                    conn, _ = server.accept()
                    conn.sendall(b"go")
                    answered.append(conn)
                return real.write(text)

            def flush(self):
                real.flush()

        code = (f"%%px --stream --targets 0\nimport socket\n"
                f"s = socket.create_connection(('127.0.0.1', {port}), timeout=30)\n"
                "print('first', flush=True)\nprint('got', s.recv(10).decode())")
        monkeypatch.setattr(sys, "stdout", Screen())
        assert run(ip, code) is None
        monkeypatch.setattr(sys, "stdout", real)
        answered[0].close()
    assert capsys.readouterr().out == "[stdout:0] first\n[stdout:0] got go\n"


def test_local_runs_here_too(ip, capsys):
    assert run(ip, "%%px --local\nimport os\nwhere = os.getpid()") is None
    assert ip.user_ns["where"] == os.getpid()
    assert set(ip.user_ns["rc"][:].pull("where", block=True)) != {os.getpid()}


def test_verbose_says_where(ip, capsys):
    run(ip, "%px --verbose --targets 1 pass")
    assert capsys.readouterr().out == "[px] running on engine(s) 1\n"
    run(ip, "%px -v --noblock pass")
    assert capsys.readouterr().out == "[px] running on engine(s) 0, 1; %pxresult shows the output\n"
    run(ip, "%pxresult")


def test_pxconfig_changes_defaults(ip, capsys):
    run(ip, "%pxconfig")
    assert capsys.readouterr().out == ("targets: the view's targets; blocking; group outputs by type; "
                                       "streaming output; verbose off\n")
    run(ip, "%pxconfig --targets 1 --noblock --verbose --no-stream --group-outputs engine")
    run(ip, "%pxconfig")
    assert capsys.readouterr().out == ("targets: 1; non-blocking; group outputs by engine; "
                                       "not streaming output; verbose on\n")
    run(ip, "%px print('later')")
    assert capsys.readouterr().out == "[px] running on engine(s) 1; %pxresult shows the output\n"
    run(ip, "%pxresult")
    assert capsys.readouterr().out == "[stdout:1] later\n"
    run(ip, "%px --block --no-verbose --targets all print('now')")  # a line's options win
    assert lines(capsys.readouterr().out) == ["[stdout:0] now", "[stdout:1] now"]


def test_autopx_runs_cells_on_engines_until_toggled(ip, capsys):
    assert run(ip, "%autopx") is None
    assert capsys.readouterr().out == "%autopx enabled\n"
    # the terminal still sees an unfinished block as unfinished
    assert ip.input_transformer_manager.check_complete("for i in range(2):\n")[0] == "incomplete"
    assert run(ip, "remote = 5\nfor i in range(2):\n    print(remote + i)") is None
    assert lines(capsys.readouterr().out) == ["[stdout:0] 5", "[stdout:0] 6", "[stdout:1] 5", "[stdout:1] 6"]
    assert isinstance(run(ip, "1/0"), errors.CompositeError)
    capsys.readouterr()
    assert run(ip, "%autopx") is None
    assert capsys.readouterr().out == "%autopx disabled\n"
    assert "remote" not in ip.user_ns
    assert run(ip, "here = 1") is None and ip.user_ns["here"] == 1


def test_activate_with_suffixes_gives_each_view_its_magics(ip, capsys):
    run(ip, "rc[0].activate('_a'); view_b = rc.activate(targets=[1], suffix='_b')")
    run(ip, "%px_a print('a')")
    run(ip, "%%px_b\nprint('b')")
    assert capsys.readouterr().out == "[stdout:0] a\n[stdout:1] b\n"
    run(ip, "%pxconfig_a --noblock")
    run(ip, "%px_a print('a2')")
    run(ip, "%px print('plain')")  # the unsuffixed magics are untouched
    assert lines(capsys.readouterr().out) == ["[stdout:0] plain", "[stdout:1] plain"]
    run(ip, "%pxresult_a")
    assert capsys.readouterr().out == "[stdout:0] a2\n"
    run(ip, "%autopx_b")
    run(ip, "print('auto b')")
    run(ip, "%autopx_b")
    assert capsys.readouterr().out == "%autopx_b enabled\n[stdout:1] auto b\n%autopx_b disabled\n"


def test_explicit_activation_survives_a_new_client(ip, shared_cluster, capsys):
    run(ip, "rc[1].activate()")
    with ipcluster.Client(url_file=shared_cluster.connection_file):
        run(ip, "%px print('still 1')")
        assert capsys.readouterr().out == "[stdout:1] still 1\n"
    ip.user_ns["rc"].close()  # the activated view's client is gone: the next Client takes over
    with ipcluster.Client(url_file=shared_cluster.connection_file) as newer:
        newer.wait_for_engines(2, timeout=30)
        assert magics_for(ip).view.client is newer
        run(ip, "%px print('newer')")
        assert lines(capsys.readouterr().out) == ["[stdout:0] newer", "[stdout:1] newer"]


def test_px_on_a_closed_client_is_a_usage_error(ip, capsys):
    ip.user_ns["rc"].close()
    ip.run_cell("%px 1")
    assert "is closed: create a new Client" in capsys.readouterr().err


def test_px_on_a_load_balanced_view(ip, capsys):
    run(ip, "lv = rc.load_balanced_view()\nlv.activate('_lb')")
    assert run(ip, "%%px_lb\nimport os\nprint('task', os.getpid())\n6 * 7") is None
    out = capsys.readouterr().out
    pids = {e: ip.user_ns["rc"][e].apply_sync(os.getpid) for e in (0, 1)}
    engine = [e for e, pid in pids.items() if f"task {pid}" in out]
    assert len(engine) == 1
    assert out.startswith(f"[stdout:{engine[0]}] task ") and f"Out[{engine[0]}:" in out and out.endswith("42\n")
    run(ip, "%px_lb -v --targets 1 pass")
    assert capsys.readouterr().out == "[px] running as a load-balanced task on engines 1\n"
    exc = run(ip, "%px_lb --targets 1 1/0")
    assert isinstance(exc, ZeroDivisionError) and "[1:execute]: " in capsys.readouterr().out


def test_engines_run_magics(ip, capsys):
    assert run(ip, "%px %timeit -n1 -r1 pass") is None
    out = capsys.readouterr().out
    assert out.count("per loop") == 2 and "[stdout:1]" in out
    assert run(ip, "%%px --no-stream\n%%timeit -n1 -r1\nx = 1") is None
    assert capsys.readouterr().out.count("per loop") == 2


def test_matplotlib_inline_figures_from_engines(ip, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("matplotlib_inline")
    assert run(ip, "%px %matplotlib inline") is None
    shown = []
    ip.display_pub.publish = lambda data, metadata=None, **kw: shown.append(data)
    assert run(ip, "%%px --no-stream -o figs\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3]);") is None
    assert [sorted(d) for d in shown] == [["image/png", "text/plain"]] * 2
    assert all(d["image/png"] for d in shown)
    assert capsys.readouterr().out == "[output:0]\n[output:1]\n"


def test_rich_values_from_engines_keep_their_html(ip, capsys):
    shown = []
    ip.display_pub.publish = lambda data, metadata=None, **kw: shown.append(data)
    code = "%%px --no-stream\nclass Rich:\n    def _repr_html_(self):\n        return '<i>rich</i>'\nRich()"
    assert run(ip, code) is None
    assert [d.get("text/html") for d in shown] == ["<i>rich</i>", "<i>rich</i>"]
    assert re.fullmatch(r"Out\[0:\d+\]:\nOut\[1:\d+\]:\n", capsys.readouterr().out)


def _interrupt_when(rc, text):
    """SIGINT this process when *text* arrives from an engine (as a terminal's Ctrl-C would)."""
    sent = []

    def hook(msg):
        if text in str(msg.content.get("text", "")) and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
    rc._tracker.add_output_hook(hook)
    return hook


@pytest.mark.parametrize("view", ["direct", "load-balanced"])
def test_ctrl_c_interrupts_the_engines_running_the_cell(ip, capsys, view):
    rc = ip.user_ns["rc"]
    name = "px"
    if view == "load-balanced":
        rc.load_balanced_view().activate("_lb")
        name = "px_lb"
    run(ip, "%px pass")  # the engines' IPython is imported: the cell starts at once
    hook = _interrupt_when(rc, "started")
    try:
        t0 = time.monotonic()
        exc = run(ip, f"%%{name} -o slow\nimport time\nprint('started', flush=True)\ntime.sleep(60)")
        took = time.monotonic() - t0
    finally:
        rc._tracker.remove_output_hook(hook)
    assert isinstance(exc, KeyboardInterrupt) and "sent SIGINT to engine(s)" in str(exc)
    assert took < 10
    ar = ip.user_ns["slow"]
    assert ar.done()
    failures = ar.exception().elist if view == "direct" else [ar.exception()]
    # a part that had not started yet is aborted instead
    assert all(getattr(e, "ename", "") == "KeyboardInterrupt" or isinstance(e, errors.TaskAborted)
               for e in failures)
    assert any(getattr(e, "ename", "") == "KeyboardInterrupt" for e in failures)
    o, e = capsys.readouterr()
    assert "[stdout:" in o and "started" in o and "[px] interrupting engine(s)" in e
    assert "KeyboardInterrupt: interrupted while waiting for the engines" in o
    assert run(ip, "%px print('usable')") is None  # the engines serve on
    assert lines(capsys.readouterr().out) == ["[stdout:0] usable", "[stdout:1] usable"]


def test_ctrl_c_while_the_cell_is_sent_still_reaches_the_engines(ip, capsys, monkeypatch):
    from ipcluster.client.view import DirectView

    run(ip, "%px pass")
    real_execute = DirectView.execute

    def execute_with_ctrl_c(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # lands while the requests are being sent
        return real_execute(self, *args, **kwargs)

    monkeypatch.setattr(DirectView, "execute", execute_with_ctrl_c)
    t0 = time.monotonic()
    exc = run(ip, "%%px -o slow --local\nimport time\nran_here = True\ntime.sleep(60)")
    monkeypatch.setattr(DirectView, "execute", real_execute)
    assert isinstance(exc, KeyboardInterrupt) and time.monotonic() - t0 < 10
    assert "ran_here" not in ip.user_ns  # an interrupted run does not go on locally
    ar = ip.user_ns["slow"]
    assert ar.done()
    assert all(getattr(e, "ename", "") == "KeyboardInterrupt" or isinstance(e, errors.TaskAborted)
               for e in ar.exception().elist)
    capsys.readouterr()
    assert run(ip, "%px print('usable')") is None
    assert lines(capsys.readouterr().out) == ["[stdout:0] usable", "[stdout:1] usable"]
