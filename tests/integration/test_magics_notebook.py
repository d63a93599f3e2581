"""examples/magics.ipynb run by a real Jupyter kernel (ipykernel, through nbclient).

The kernel is this interpreter (a kernelspec written to a temporary JUPYTER_PATH), with a private
IPYTHONDIR, so the notebook's cluster lives under the test's temporary directory.  The test checks
what a user would see in the saved notebook: per-engine stdout, HTML and an image made on an
engine, a remote error that fails its cell, %autopx and %pxresult output.  A second test
interrupts the kernel (the notebook's stop button) while a %%px cell runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import kill_all

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).parents[2] / "examples" / "magics.ipynb"
KERNEL = "ipcluster-test-python"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec running this interpreter, and a private IPython directory."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ipcluster tests", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "agg")
    return tmp_path


def _cluster_processes(marker: str) -> set[int]:
    """Processes started for the notebook's cluster (their command lines name its directory)."""
    found = set()
    for p in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            env = p.info["environ"] or {}
        except (psutil.Error, TypeError):
            continue
        if p.pid != os.getpid() and (marker in cmd or env.get("IPYTHONDIR", "").startswith(marker)):
            found.add(p.pid)
    return found


def _text(outputs, name="stdout"):
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == name)


def _data(outputs, mime):
    return [o["data"][mime] for o in outputs if o.output_type in ("display_data", "execute_result")
            and mime in o.get("data", {})]


def test_example_notebook_runs_in_a_jupyter_kernel(kernel_env):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=90, startup_timeout=60,
                                     resources={"metadata": {"path": str(kernel_env)}})
    try:
        client.execute()
    finally:
        kill_all(_cluster_processes(str(kernel_env)))
    by_source = {c.source: c.outputs for c in nb.cells if c.cell_type == "code"}

    def outputs_of(start: str):
        matches = [o for s, o in by_source.items() if s.startswith(start)]
        assert len(matches) == 1, f"{len(matches)} cells start with {start!r}"
        return matches[0]

    # per-engine stdout and values
    pids = outputs_of("%%px\nprint(f\"engine {rank}")
    text = _text(pids)
    assert "[stdout:0] engine 0 runs as process " in text and "[stdout:1] engine 1 runs as process " in text
    values = [v for v in _data(pids, "text/plain") if v.startswith("Out[")]
    assert [v.split(": ")[1] for v in values] == ["0", "100"]
    assert [v.split(":")[0] for v in values] == ["Out[0", "Out[1"]

    targeted = outputs_of("%%px --targets 1")
    assert _text(targeted) == "[stdout:1] only engine 1\n"
    assert _text(targeted, "stderr") == "[stderr:1] a warning from engine 1\n"

    # rich output made on the engines
    html = _data(outputs_of("%%px\nfrom IPython.display import HTML"), "text/html")
    assert sorted(html) == ["<b>hello</b> from engine <code>0</code>", "<b>hello</b> from engine <code>1</code>"]
    figures = outputs_of("%%px --no-stream\nimport matplotlib")
    images = _data(figures, "image/png")
    assert len(images) == 2 and all(len(img) > 1000 for img in images)
    assert _text(figures) == "[output:0]\n[output:1]\n"

    # the remote error failed its cell, showing the engine's traceback
    errors_out = [o for o in outputs_of("%%px\n1 / rank") if o.output_type == "error"]
    assert len(errors_out) == 1 and errors_out[0].ename == "CompositeError"
    tb = "\n".join(errors_out[0].traceback)
    assert "[0:execute]: " in tb and "ZeroDivisionError: division by zero" in tb and "[1:execute]" not in tb

    # non-blocking, %pxresult and the AsyncResult kept with -o
    assert outputs_of("%px --noblock") == []
    assert sorted(_text(outputs_of("%pxresult")).splitlines()) == ["[stdout:0] done sleeping",
                                                                   "[stdout:1] done sleeping"]
    assert _data(outputs_of("ar.get(), ar.stdout"), "text/plain") == [
        "([None, None], ['done sleeping\\n', 'done sleeping\\n'])"]

    # %autopx ran a plain cell on the engines
    assert sorted(_text(outputs_of("total = sum")).splitlines()) == ["[stdout:0] partial sum 0",
                                                                      "[stdout:1] partial sum 45"]
    assert _data(outputs_of("rc[:].pull"), "text/plain") == ["[0, 45]"]

    # a load-balanced view's magics
    assert _text(outputs_of("%%px_lb")) in ("[stdout:0] ran on engine 0\n", "[stdout:1] ran on engine 1\n")
    assert not [o for s, outs in by_source.items() for o in outs
                if o.output_type == "error" and not s.startswith("%%px\n1 / rank")]
    assert outputs_of("cluster.stop_cluster_sync()") == []  # stopped cleanly


def _run(kc, code: str, until=None, timeout: float = 60, stop_on_error: bool = True) -> tuple[dict, str]:
    """Execute *code* in the kernel; return its execute_reply content and the stream text it
    printed.  With *until*, return (None, text) as soon as ``until(text)`` holds instead.
    ``stop_on_error=False``: if the cell fails, the kernel does not abort the requests that follow
    (it otherwise aborts those that arrive just after the error reply, as a notebook's queue)."""
    msg_id = kc.execute(code, stop_on_error=stop_on_error)
    text = ""
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            text += msg["content"]["text"]
            if until is not None and until(text):
                return {}, text
        elif msg["msg_type"] == "error":
            text += "\n".join(msg["content"]["traceback"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], text


def test_kernel_interrupt_stops_the_engines_running_a_cell(kernel_env):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=KERNEL, cwd=str(kernel_env), startup_timeout=60)
    try:
        reply, _ = _run(kc, "import ipcluster as ipp\ncluster = ipp.Cluster(n=2)\n"
                            "rc = cluster.start_and_connect_sync()\nrc.wait_for_engines(2)")
        assert reply["status"] == "ok"
        # returns once both engines said they started (the cell is still running)
        _run(kc, "%%px\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)",
             until=lambda t: "[stdout:0] sleeping" in t and "[stdout:1] sleeping" in t, stop_on_error=False)
        km.interrupt_kernel()  # what the notebook's stop button does
        reply = kc.get_shell_msg(timeout=20)["content"]
        assert reply["status"] == "error" and reply["ename"] == "EnginesInterrupted"
        assert "sent SIGINT to engine(s) 0, 1" in reply["evalue"]
        reply, text = _run(kc, "%px print('after', 6 * 7)")
        assert reply["status"] == "ok" and sorted(text.splitlines()) == ["[stdout:0] after 42",
                                                                         "[stdout:1] after 42"]
        reply, _ = _run(kc, "cluster.stop_cluster_sync()")
        assert reply["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        kill_all(_cluster_processes(str(kernel_env)))
