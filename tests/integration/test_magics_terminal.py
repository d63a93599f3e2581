"""The parallel magics in a real terminal IPython, driven through a pseudo-terminal.

``ipython`` runs with its full prompt_toolkit interface in a pty; what it writes goes through a
terminal emulator (pyte), and the test reads the rendered screen, as a user would.  The emulator
answers the terminal's cursor-position queries, which prompt_toolkit needs to draw its prompt.
Every wait is for something to appear on the screen, with a deadline.
"""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

from tests.conftest import kill_all

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

pytestmark = pytest.mark.timeout(120)


class Terminal:
    """A child process in a pty, and the screen a terminal would show for it."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 60, cols: int = 160):
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, dimensions=(rows, cols), encoding="utf-8")
        child = self.child

        class Screen(pyte.HistoryScreen):
            def write_process_input(self, data: str) -> None:  # the terminal's answers to queries
                child.send(data)

        self.screen = Screen(cols, rows, history=5000)
        self.stream = pyte.Stream(self.screen)

    def text(self) -> str:
        """Everything on screen, with the lines scrolled off the top."""
        scrolled = ["".join(ch.data for ch in line.values()).rstrip() for line in self.screen.history.top]
        return "\n".join(scrolled + [line.rstrip() for line in self.screen.display]).strip("\n")

    def wait(self, predicate, what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; the screen shows:\n{text}")
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.2))
            except pexpect.TIMEOUT:
                continue  # nothing new yet
            except pexpect.EOF:
                pytest.fail(f"ipython exited while waiting for {what}; the screen shows:\n{self.text()}")

    def prompt(self, n: int, timeout: float = 30) -> str:
        return self.wait(lambda t: f"In [{n}]:" in t, f"prompt In [{n}]", timeout)

    def type_line(self, text: str) -> None:
        """Type *text* and press Enter (keys sent as one write, like a fast typist)."""
        self.child.send(text + "\r")

    def enter_on_continuation(self) -> None:
        """Press Enter once the prompt shows an empty continuation line."""
        self.wait(lambda t: t.rstrip().endswith("...:"), "a continuation prompt", 10)
        self.child.send("\r")


def _since(text: str, marker: str) -> str:
    return text[text.rindex(marker):]


@pytest.mark.slow
def test_px_autopx_and_ctrl_c_in_terminal_ipython(tmp_path, no_leaked_processes):
    env = dict(os.environ, TERM="xterm", IPYTHONDIR=str(tmp_path / "ipython"), PYTHONUNBUFFERED="1")
    term = Terminal([sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor", "--no-confirm-exit",
                     "--HistoryManager.enabled=False", "--TerminalInteractiveShell.autoindent=False"], env)
    descendants: set[int] = set()
    try:
        term.prompt(1)
        term.type_line(f"import ipcluster; c = ipcluster.Cluster(n=2, profile_dir={str(tmp_path / 'p')!r}); "
                       "rc = c.start_and_connect_sync(); rc.wait_for_engines(2)")
        term.prompt(2)
        descendants = {p.pid for p in psutil.Process(term.child.pid).children(recursive=True)}
        assert len(descendants) >= 3  # the controller and two engines (and maybe their supervisor)

        # %px: the Client made in this session activated the magics
        term.type_line("%px import os; print('hello from', os.getpid())")
        screen = _since(term.prompt(3), "In [2]:")
        lines = [ln for ln in screen.splitlines() if ln.startswith("[stdout:")]
        assert sorted(ln.split()[0] for ln in lines) == ["[stdout:0]", "[stdout:1]"]
        assert all(int(ln.split()[-1]) in descendants for ln in lines)

        # %autopx: a multi-line block is still typed as a block, then runs on the engines
        term.type_line("%autopx")
        assert "%autopx enabled" in term.prompt(4)
        term.type_line("for i in range(2):")
        term.type_line("    print('loop', i * 10)")
        term.enter_on_continuation()
        screen = _since(term.prompt(5), "In [4]:")
        for e in (0, 1):
            assert f"[stdout:{e}] loop 0" in screen and f"[stdout:{e}] loop 10" in screen
        term.type_line("%autopx")
        assert "%autopx disabled" in term.prompt(6)
        term.type_line("print('local', 'i' in dir())")
        assert "local False" in term.prompt(7)

        # a remote error shows each engine's traceback
        term.type_line("%px 1/0")
        screen = _since(term.prompt(8), "In [7]:")
        assert "[0:execute]:" in screen and "[1:execute]:" in screen
        assert "CompositeError: one or more exceptions raised in execute" in screen

        # Ctrl-C while %%px waits interrupts the engines and gives the prompt back
        term.type_line("%%px")
        term.type_line("import time; print('sleeping', flush=True); time.sleep(60)")
        term.enter_on_continuation()  # a cell magic ends at a blank line
        term.enter_on_continuation()
        term.wait(lambda t: "[stdout:0] sleeping" in t and "[stdout:1] sleeping" in t, "the cell to start")
        t0 = time.monotonic()
        term.child.sendintr()
        screen = _since(term.prompt(9, timeout=15), "In [8]:")
        assert time.monotonic() - t0 < 10
        assert "[px] interrupting engine(s) 0, 1" in screen
        assert "KeyboardInterrupt: interrupted while waiting for the engines" in screen
        term.type_line("%px print('after', 1 + 1)")
        screen = _since(term.prompt(10), "In [9]:")
        assert "[stdout:0] after 2" in screen and "[stdout:1] after 2" in screen

        term.type_line("c.stop_cluster_sync()")
        term.prompt(11)
        term.type_line("exit")
        term.child.expect(pexpect.EOF, timeout=30)
    finally:
        if term.child.isalive():
            descendants |= {p.pid for p in psutil.Process(term.child.pid).children(recursive=True)}
            term.child.terminate(force=True)
        term.child.close()
        kill_all(descendants)
