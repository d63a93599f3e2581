"""A handle on one OS process, whether we started it or only know its pid.

:class:`ProcessHandle` gives launchers a Popen-like view of a process:

* a process we **started** (``spawn``) is a :class:`subprocess.Popen` child: ``poll`` reaps it and
  knows its exit code;
* a process we **attached** to by pid (a cluster file written by another ``ipcluster`` process) is
  watched with psutil.  Its exit code is unknown (``returncode`` stays ``None`` once it is gone,
  and :attr:`ProcessHandle.exited` says it ended).  A zombie counts as gone: some init processes
  reap orphans lazily.  The recorded creation time guards against a recycled pid.

Waiting is event driven where Linux offers it (``os.pidfd_open`` + the event loop's reader) and
falls back to polling with a deadline elsewhere, so no caller sleeps for a fixed time.

Every child is started in a new session (``start_new_session=True``): Ctrl-C in a terminal or a
notebook does not reach it, ``--daemonize`` leaves it running, and its process group (pgid == pid)
lets :meth:`ProcessHandle.kill_group` reach grandchildren even after the child itself died.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import psutil

# psutil is imported where it is used: starting a child must not wait for it (cold start).

#: How long an unanswered fallback poll waits between checks, at most (seconds).
_MAX_POLL_INTERVAL = 0.05


def pid_alive(pid: int | None, create_time: float | None = None) -> bool:
    """Is *pid* a running (not zombie) process, created at *create_time* when that is given?"""
    if not pid or pid <= 0:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False  # the pid was recycled
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False


def process_create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def tail_file(path: str | os.PathLike[str] | None, n: int = 20, max_bytes: int = 64 * 1024) -> str:
    """The last *n* lines of the text file at *path* ("" when it cannot be read).

    Only the last *max_bytes* are read, so a huge log costs no more than a small one.
    """
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line is probably cut
    return "\n".join(deque(lines, maxlen=n))


class ProcessHandle:
    """Popen-like control of one process by pid (see the module docstring).

    Parameters
    ----------
    pid:
        The process id.
    popen:
        The :class:`subprocess.Popen` when this process is our child.
    create_time:
        psutil's creation time of the process, to recognise a recycled pid.
    pgid:
        The process group to signal with :meth:`kill_group` (``None``: only the process itself).
    """

    def __init__(
        self,
        pid: int,
        popen: subprocess.Popen[bytes] | None = None,
        create_time: float | None = None,
        pgid: int | None = None,
    ):
        self.pid = pid
        self.popen = popen
        # a child of ours needs no creation time until it is recorded (see to_dict)
        self.create_time = create_time if create_time is not None or popen else process_create_time(pid)
        self.pgid = pgid
        self.returncode: int | None = None
        self.exited = False

    # --- construction ----------------------------------------------------------------------------

    @classmethod
    def spawn(
        cls,
        args: Sequence[str],
        log_path: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> "ProcessHandle":
        """Start *args* in a new session, stdin from /dev/null, stdout+stderr appended to *log_path*."""
        Path(log_path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0600 from the start: the output may hold task data
        with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        return cls(popen.pid, popen=popen, pgid=popen.pid)

    @classmethod
    def attach(cls, pid: int, create_time: float | None = None, pgid: int | None = None) -> "ProcessHandle":
        """A handle on a process some other program started."""
        handle = cls(pid, create_time=create_time, pgid=pgid)
        if create_time is None:
            handle.create_time = process_create_time(pid)
        return handle

    # --- Popen-like interface --------------------------------------------------------------------

    def poll(self) -> int | None:
        """``None`` while running; the exit code once ended (``None`` too if unknown, see ``exited``)."""
        if self.exited:
            return self.returncode
        if self.popen is not None:
            rc = self.popen.poll()
            if rc is not None:
                self.exited, self.returncode = True, rc
            return rc
        if not pid_alive(self.pid, self.create_time):
            self.exited = True
        return None

    @property
    def running(self) -> bool:
        self.poll()
        return not self.exited

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the process ended; return its exit code (``None`` when unknown).

        Raises :class:`asyncio.TimeoutError` (the builtin ``TimeoutError``) after *timeout* seconds.
        """
        if not self.running:
            return self.returncode
        async with asyncio.timeout(timeout):
            if not await self._wait_pidfd():
                await self._wait_polling()
        self.poll()
        return self.returncode

    async def _wait_pidfd(self) -> bool:
        """Wait on a pidfd; ``False`` when pidfds are unavailable (then the caller polls)."""
        if not hasattr(os, "pidfd_open"):
            return False
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self.poll()
            self.exited = True
            return True
        except OSError:
            return False
        loop = asyncio.get_running_loop()
        try:
            # the pid may have ended and been recycled between poll() and pidfd_open()
            if not self.running:
                return True
            done: asyncio.Future[None] = loop.create_future()

            def wake() -> None:
                if not done.done():
                    done.set_result(None)

            loop.add_reader(fd, wake)
            try:
                await done
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)
        # readable means "exited"; for a child, poll() now reaps it.  A non-child may linger as
        # a zombie until its parent reaps it, which pid_alive() already counts as gone.
        while self.running:  # pragma: no cover - only for a kernel/psutil disagreement
            await asyncio.sleep(0.001)
        return True

    async def _wait_polling(self) -> None:
        interval = 0.001
        while self.running:
            await asyncio.sleep(interval)
            interval = min(interval * 2, _MAX_POLL_INTERVAL)

    def send_signal(self, signum: int) -> None:
        """Send *signum* to the process; a process that is already gone is ignored."""
        if not self.running:
            return
        try:
            if self.popen is not None:
                self.popen.send_signal(signum)
            else:
                import psutil

                try:
                    psutil.Process(self.pid).send_signal(signum)
                except psutil.NoSuchProcess:
                    pass
        except ProcessLookupError:
            pass

    # --- process group ---------------------------------------------------------------------------

    def group_members(self) -> list["psutil.Process"]:
        """Live processes of this handle's process group plus its current descendants."""
        import psutil

        found: dict[int, psutil.Process] = {}
        if self.running:
            try:
                for child in psutil.Process(self.pid).children(recursive=True):
                    found[child.pid] = child
            except psutil.NoSuchProcess:
                pass
        if self._group_is_ours():
            for proc in psutil.process_iter():
                try:
                    if proc.pid not in found and os.getpgid(proc.pid) == self.pgid:
                        if self.create_time is None or proc.create_time() >= self.create_time - 0.01:
                            found[proc.pid] = proc
                except (ProcessLookupError, PermissionError, psutil.Error):
                    continue
        found.pop(self.pid, None)
        return [p for p in found.values() if _proc_alive(p)]

    def _group_is_ours(self) -> bool:
        """May processes in group ``pgid`` be taken for ours?

        Yes while our leader runs.  Once it is gone, a group id is not reused while any member is
        left, so the group is still ours unless a *different* process now holds the leader's pid.
        """
        if not self.pgid:
            return False
        if self.running:
            return True
        import psutil

        try:
            holder = psutil.Process(self.pgid)
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False
        try:
            return self.create_time is not None and abs(holder.create_time() - self.create_time) <= 0.01
        except psutil.Error:
            return False

    def kill_group(self, signum: int = signal.SIGKILL) -> None:
        """Send *signum* to the process, its process group and its descendants."""
        import psutil

        members = self.group_members()
        self.send_signal(signum)
        for proc in members:
            try:
                proc.send_signal(signum)
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass

    def to_dict(self) -> dict[str, Any]:
        if self.create_time is None and self.running:
            self.create_time = process_create_time(self.pid)
        return {"pid": self.pid, "create_time": self.create_time, "pgid": self.pgid}


def _proc_alive(proc: "psutil.Process") -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_gone(procs: Sequence["psutil.Process"], timeout: float) -> list["psutil.Process"]:
    """Wait until every process in *procs* is gone; return those still alive after *timeout*."""
    deadline = time.monotonic() + timeout
    interval = 0.001
    alive = [p for p in procs if _proc_alive(p)]
    while alive and time.monotonic() < deadline:
        await asyncio.sleep(interval)
        interval = min(interval * 2, _MAX_POLL_INTERVAL)
        alive = [p for p in alive if _proc_alive(p)]
    return alive
