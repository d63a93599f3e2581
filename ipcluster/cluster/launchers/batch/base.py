"""The batch launcher: submit a rendered script, then follow the job through the scheduler.

Unlike a local process, a batch job is only known by its id.  :class:`BatchLauncher`

* renders its script (:mod:`.templates`), writes it next to the log, submits it
  (``submit_command``) and reads the job id from what the command printed (``job_id_regexp``);
* asks the scheduler for the job's state (``status_commands``, parsed by :mod:`.status`) — at
  most every ``poll_interval`` seconds from ``poll()``, so ``Cluster.running`` stays cheap — and so
  notices a job that failed, was cancelled or reached its wall time;
* cancels the job on ``stop()`` (``delete_command``; then ``kill_command``) and waits until the
  scheduler reports it ended, so a stopped cluster leaves no job behind.

Backends (Slurm, SGE, PBS, LSF, HTCondor) are small subclasses that say which commands to run, how
to parse their output and which directives to write; :class:`BatchControllerLauncher` and
:class:`BatchEngineSetLauncher` say what runs in the job.  Scheduler commands are lists
(``["sbatch", "--parsable"]``); the job id or script path is appended.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal as _signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, ClassVar

from traitlets import Dict, Float, Integer, List, Unicode, Union

from ipcluster.cluster.launchers.controlleropts import ControllerOptions
from ipcluster.cluster.launchers.base import BaseLauncher
from ipcluster.cluster.launchers.batch.status import JobState, JobStatus
from ipcluster.cluster.launchers.batch.templates import JobSpec, render_script
from ipcluster.cluster.launchers.process import tail_file
from ipcluster.errors import LauncherError

#: A status source: (command, parser).  ``{job_id}`` in the command is replaced by the job id.
StatusSource = tuple[list[str], Callable[[str, str], "JobStatus | None"]]

#: Seconds a just-submitted job may be unknown to the status commands before it counts as gone.
SUBMIT_GRACE = 15.0


class BatchLauncher(BaseLauncher):
    """A controller or engine set run as one batch job (see the module docstring)."""

    name = "batch"
    #: The job's scheduler, for messages ("Slurm job 12").
    scheduler: ClassVar[str] = "batch"
    #: What starts the backend's directive lines (``#SBATCH``).
    directive_prefix: ClassVar[str] = "#"
    #: Default templates by kind (``"controller"`` / ``"engines"``).
    default_templates: ClassVar[dict[str, str]] = {}
    #: Submit the script on standard input (``bsub < script``) rather than as an argument.
    submit_on_stdin: ClassVar[bool] = False
    #: The script file's suffix.
    script_suffix: ClassVar[str] = ".sh"
    #: Engines: one engine per task of the job (srun, array) rather than a supervisor of n.
    one_engine_per_task: ClassVar[bool] = False

    submit_command = List(Unicode(), help="Command that submits the script (its path is appended).").tag(
        config=True
    )
    delete_command = List(Unicode(), help="Command that cancels the job (its id is appended).").tag(
        config=True
    )
    kill_command = List(Unicode(), help="Command that cancels a job that survived delete_command "
                        "(default: delete_command again).").tag(config=True)
    signal_command = List(Unicode(), help="Command that sends a signal to the job's processes; "
                          "'{signal}' in it is replaced by the signal name (e.g. INT).").tag(config=True)
    status_command = List(Unicode(), help="Generic launcher only: a command (job id appended) that "
                          "exits 0 while the job is queued or running, non-zero once it is gone.").tag(
        config=True
    )
    job_id_regexp = Unicode(r"\d+", help="Regular expression that finds the job id in what "
                            "submit_command prints.").tag(config=True)
    job_id_regexp_group = Integer(0, help="The group of job_id_regexp that is the id.").tag(config=True)
    batch_template = Unicode("", help="The job script template (see docs/launchers.md for its "
                             "fields, e.g. {n}, {queue}, {program_and_args}); empty: the default.").tag(
        config=True
    )
    batch_template_file = Unicode("", help="A file holding the job script template "
                                  "(used when batch_template is empty).").tag(config=True)
    queue = Unicode("", help="Queue (Slurm: partition) to submit to.").tag(config=True)
    account = Unicode("", help="Account (project) the job is charged to.").tag(config=True)
    timelimit = Unicode("", help="Wall-time limit in the scheduler's format (e.g. '1:00:00').").tag(
        config=True
    )
    options = Union([List(Unicode()), Unicode()], default_value=[],
                    help="Extra scheduler directives, one per item or line (e.g. ['--mem=4G'] for "
                    "Slurm): each becomes a directive line in the default script.").tag(config=True)
    environment = Dict(Unicode(), help="Extra environment variables exported in the job script.").tag(
        config=True
    )
    python_executable = Unicode(sys.executable, help="The Python that runs the engines or the "
                                "controller on the compute nodes (default: this one).").tag(config=True)
    poll_interval = Float(1.0, help="Seconds between job-state queries.").tag(config=True)
    command_timeout = Float(30.0, help="Seconds a scheduler command may take.").tag(config=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.job_id: str = ""
        self.script_path: str = ""
        self.status: JobStatus | None = None
        self.submitted_at: float | None = None  # time.time() of the submission
        self._checked_at = 0.0  # time.monotonic() of the last state query
        self._warned_query = False
        self._seen = False  # a status command has reported the job at least once

    # --- what runs in the job (controller or engines; see the subclasses below) ---------------

    def program(self) -> list[str]:
        raise LauncherError(f"{type(self).__name__} runs neither a controller nor engines")

    @property
    def job_n(self) -> int:
        return 1

    # --- rendering (pure, given the traits) ----------------------------------------------------

    def job_spec(self) -> JobSpec:
        """The plain values the script is rendered from."""
        options = self.options.splitlines() if isinstance(self.options, str) else list(self.options)
        cid = self.cluster_id or "default"
        return JobSpec(
            kind=self.kind, n=self.job_n, program=tuple(self.program()),
            job_name=f"ipcluster-{self.kind}-{cid}"[:60],
            output_file=self.log_path, profile_dir=self.profile_dir, cluster_id=self.cluster_id,
            connection_file=getattr(self, "connection_file", "") or self._default_connection_file(),
            python=self.python_executable, queue=self.queue, account=self.account,
            timelimit=self.timelimit, options=tuple(options),
            environment=tuple(sorted(self.environment.items())),
        )

    def _default_connection_file(self) -> str:
        from ipcluster.protocol.connection import connection_file_path

        return str(connection_file_path(self.profile_dir, self.cluster_id)) if self.profile_dir else ""

    def template(self) -> str:
        """The template in use: ``batch_template``, else ``batch_template_file``, else the default."""
        if self.batch_template:
            return self.batch_template
        if self.batch_template_file:
            try:
                return Path(self.batch_template_file).expanduser().read_text()
            except OSError as e:
                raise LauncherError(f"{self}: cannot read batch_template_file: {e}") from None
        try:
            return self.default_templates[self.kind]
        except KeyError:
            raise LauncherError(f"{type(self).__name__} has no default template: set "
                                f"c.{type(self).__name__}.batch_template") from None

    def directives(self, spec: JobSpec) -> list[str]:
        """The backend's directive lines for *spec* (none for the generic launcher)."""
        return []

    def render(self) -> str:
        spec = self.job_spec()
        return render_script(self.template(), spec, self.directives(spec), self.directive_prefix,
                             what=f"{type(self).__name__} template")

    # --- scheduler commands ---------------------------------------------------------------------

    def _run(self, cmd: list[str], stdin_path: str | None = None,
             cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a scheduler command; a missing command or a hang becomes a LauncherError."""
        try:
            stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
            try:
                return subprocess.run(cmd, stdin=stdin, capture_output=True, timeout=self.command_timeout,
                                      start_new_session=True, check=False, text=True, errors="replace",
                                      cwd=cwd)
            finally:
                if stdin_path:
                    stdin.close()  # type: ignore[union-attr]
        except FileNotFoundError:
            raise LauncherError(f"{self}: {cmd[0]!r} not found: is {self.scheduler} installed "
                                "and on PATH?") from None
        except subprocess.TimeoutExpired:
            raise LauncherError(f"{self}: {shlex.join(cmd)} did not finish within "
                                f"{self.command_timeout:g} s") from None

    def parse_job_id(self, output: str) -> str:
        m = re.search(self.job_id_regexp, output)
        if not m:
            raise LauncherError(f"{self}: no job id matching {self.job_id_regexp!r} in the output of "
                                f"{shlex.join(self.submit_command)}: {output.strip()[:500]!r}")
        return m.group(self.job_id_regexp_group)

    def status_sources(self) -> list[StatusSource]:
        """Where the job's state is asked, in order; the first source that knows the job wins."""
        return []

    def query_status(self) -> JobStatus:
        """Ask the scheduler now (blocking; one or two short commands)."""
        sources = self.status_sources()
        if not sources and self.status_command:  # generic: only the exit status means something
            result = self._run([*self.status_command, self.job_id])
            if result.returncode == 0:
                self._seen = True
                return JobStatus(JobState.RUNNING)
            sources = []
        elif not sources:  # nothing can tell: believe the job runs until it is deleted
            return self.status or JobStatus(JobState.QUEUED)
        errors = []
        for cmd, parse in sources:
            result = self._run([part.replace("{job_id}", self.job_id) for part in cmd])
            status = parse(result.stdout, self.job_id)
            if status is not None:
                self._seen = True
                return status
            if result.returncode != 0 and result.stderr.strip():
                errors.append(result.stderr.strip().splitlines()[-1])
        # unknown everywhere: ended (and forgotten), unless it was only just submitted
        just_submitted = self.submitted_at is not None and time.time() - self.submitted_at < SUBMIT_GRACE
        if not self._seen and just_submitted:
            return self.status or JobStatus(JobState.QUEUED)
        return JobStatus(JobState.GONE, None, "; ".join(errors[:1]) or "no longer known to the scheduler")

    def refresh(self, force: bool = False) -> JobStatus | None:
        """The job's status, asking the scheduler if the last answer is older than poll_interval."""
        if not self.job_id or (self.status is not None and self.status.state.ended):
            return self.status
        if not force and time.monotonic() - self._checked_at < self.poll_interval:
            return self.status
        self._checked_at = time.monotonic()
        try:
            new = self.query_status()
        except LauncherError as e:  # the scheduler did not answer: keep what we knew
            if not self._warned_query:
                self.log.warning("cannot query %s: %s", self, e)
                self._warned_query = True
            return self.status
        if self.status is None or new != self.status:
            self.log.debug("%s: %s", self, new.describe())
        self.status = new
        return new

    @property
    def job_state(self) -> str:
        """``"queued"``, ``"running"``, ``"finished"``, ``"failed"``, ``"gone"`` (``""``: not submitted)."""
        status = self.refresh()
        return status.state.value if status else ""

    # --- Popen-like interface -------------------------------------------------------------------

    async def start(self) -> None:
        if self.job_id and self.running:
            raise LauncherError(f"{self} is already submitted")
        if not self.log_path:
            raise LauncherError(f"{self}: no log_path for the job's output")
        if not self.submit_command:
            raise LauncherError(f"{self}: no submit_command configured (c.{type(self).__name__}.submit_command)")
        script = self.render()
        path = Path(self.log_path).with_suffix(self.script_suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the script holds no secret, but nobody else needs to read it either
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(script)
        self.script_path = str(path)
        if self.submit_on_stdin:
            cmd, stdin = list(self.submit_command), str(path)
        else:
            cmd, stdin = [*self.submit_command, str(path)], None
        # from the script's directory: files a scheduler drops in the submit directory land there
        result = await asyncio.to_thread(self._run, cmd, stdin, str(path.parent))
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
            raise LauncherError(f"{self.scheduler} refused the {self.kind} job {self.script_path}: "
                                f"{shlex.join(cmd)} exited with {result.returncode}: {detail}",
                                returncode=result.returncode, output=detail)
        self.job_id = self.parse_job_id(result.stdout + "\n" + result.stderr)
        self.submitted_at = time.time()
        self.status = JobStatus(JobState.QUEUED)
        self._checked_at = time.monotonic()
        self.log.info("submitted %s (script %s)", self, self.script_path)

    def poll(self) -> int | None:
        status = self.refresh()
        return status.exit_code if status is not None and status.state.ended else None

    @property
    def running(self) -> bool:
        """Submitted and not ended (queued counts: the job still holds its place)."""
        status = self.refresh()
        return status is not None and not status.state.ended

    async def wait(self, timeout: float | None = None) -> int | None:
        if not self.job_id:
            raise LauncherError(f"{self} was not submitted")
        async with asyncio.timeout(timeout):
            while True:
                status = await asyncio.to_thread(self.refresh, True)
                if status is not None and status.state.ended:
                    return status.exit_code
                await asyncio.sleep(self.poll_interval)  # the scheduler offers no event to wait on

    def signal(self, signum: int) -> None:
        """SIGTERM/SIGKILL cancel the job; other signals need ``signal_command``."""
        if not self.job_id or not self.running:
            return
        if signum in (_signal.SIGTERM, _signal.SIGKILL) or not self.signal_command:
            if signum not in (_signal.SIGTERM, _signal.SIGKILL):
                raise LauncherError(f"{self}: {self.scheduler} jobs cannot be sent "
                                    f"{_signal.Signals(signum).name} here (no signal_command)")
            self._cancel(kill=signum == _signal.SIGKILL)
            return
        name = _signal.Signals(signum).name.removeprefix("SIG")
        cmd = [part.replace("{signal}", name) for part in self.signal_command] + [self.job_id]
        self._check(self._run(cmd), cmd)

    def signal_engines(self, signum: int) -> None:
        """Signal the engines (e.g. SIGINT to interrupt their tasks) through the scheduler.

        Only where each engine is a task of its own: otherwise the scheduler would signal the
        engine supervisor too, which stops on SIGINT/SIGTERM.
        """
        if not self.one_engine_per_task and signum not in (_signal.SIGTERM, _signal.SIGKILL):
            raise LauncherError(
                f"{self}: cannot send {_signal.Signals(signum).name} to the engines of a {self.scheduler} "
                "job: the scheduler signals every process of the job, the engine supervisor too; "
                "use Client.send_signal() instead")
        self.signal(signum)

    def _cancel(self, kill: bool = False) -> None:
        cmd = [*(self.kill_command if kill and self.kill_command else self.delete_command), self.job_id]
        if len(cmd) == 1:
            raise LauncherError(f"{self}: no delete_command configured")
        result = self._run(cmd)
        if result.returncode != 0:
            # the job may have ended meanwhile: that is what we wanted
            status = self.refresh(force=True)
            if status is None or not status.state.ended:
                self._check(result, cmd)
        self._checked_at = 0.0  # ask again soon

    def _check(self, result: subprocess.CompletedProcess[str], cmd: list[str]) -> None:
        if result.returncode != 0:
            raise LauncherError(f"{self}: {shlex.join(cmd)} exited with {result.returncode}: "
                                f"{(result.stderr or result.stdout).strip()[-500:]}")

    async def stop(self, timeout: float = 5.0) -> int | None:
        """Cancel the job and wait until the scheduler says it ended (kill_command after *timeout*)."""
        if not self.job_id or not self.running:
            return self.poll()
        await asyncio.to_thread(self._cancel)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.log.warning("%s still there %.1f s after cancelling; cancelling harder", self, timeout)
        await asyncio.to_thread(self._cancel, True)
        try:
            return await self.wait(max(timeout, 10.0))
        except TimeoutError:
            raise LauncherError(f"{self} is still {self.job_state} after cancelling it twice") from None

    def output_tail(self, n: int = 20) -> str:
        return tail_file(self.log_path, n)

    def failure(self, what: str, lines: int = 20) -> LauncherError:
        status = self.refresh(force=True)
        described = status.describe() if status is not None else "not submitted"
        return LauncherError(f"{what}: {self.scheduler} job {self.job_id or '?'} {described}; "
                             f"script {self.script_path}, output {self.log_path}",
                             returncode=status.exit_code if status else None, output=self.output_tail(lines))

    # --- state ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(job_id=self.job_id, script_path=self.script_path, submitted_at=self.submitted_at,
                 job_state=self.status.state.value if self.status else "",
                 delete_command=list(self.delete_command), kill_command=list(self.kill_command),
                 signal_command=list(self.signal_command))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], **kwargs: Any) -> "BatchLauncher":
        keys = {"profile_dir", "cluster_id", "log_path"} | cls.state_traits()
        launcher = cls(**{k: d[k] for k in keys if k in d}, **kwargs)
        for k in ("delete_command", "kill_command", "signal_command"):
            if d.get(k):
                setattr(launcher, k, list(d[k]))
        launcher.job_id = str(d.get("job_id") or "")
        launcher.script_path = d.get("script_path") or ""
        launcher.submitted_at = d.get("submitted_at")
        launcher._seen = True  # recorded jobs were known; unknown now means gone
        if launcher.job_id:
            launcher.status = JobStatus(JobState(d["job_state"])) if d.get("job_state") else None
            if launcher.status is not None and launcher.status.state.ended:
                return launcher
            launcher.status = None
            launcher.status = launcher.refresh(force=True)
        return launcher

    def __repr__(self) -> str:
        job = f" job={self.job_id}" if self.job_id else ""
        return f"<{type(self).__name__}{job}>"


class BatchControllerLauncher(ControllerOptions, BatchLauncher):
    """A controller in a batch job (``python -P -m controller``)."""

    kind = "controller"

    def program(self) -> list[str]:
        return [self.python_executable, "-P", "-m", "controller", "--profile-dir", self.profile_dir,
                "--cluster-id", self.cluster_id, *self.controller_options()]



class BatchEngineSetLauncher(BatchLauncher):
    """*n* engines in one batch job: one engine per task where the scheduler starts tasks
    (Slurm ``srun``, SGE arrays), else one supervisor forking *n* engines (``-n N``)."""

    kind = "engines"

    n = Integer(1, help="How many engines the job runs.")
    connection_file = Unicode("", help="The connection file the engines read.")
    engine_args = List(Unicode(), help="Extra command-line arguments for the engines.").tag(config=True)

    @property
    def job_n(self) -> int:
        return self.n

    def program(self) -> list[str]:
        if not self.connection_file:
            raise LauncherError(f"{self}: no connection file given")
        args = [self.python_executable, "-P", "-m", "engines", "--file", self.connection_file]
        if not self.one_engine_per_task:
            args += ["-n", str(self.n)]
        return args + list(self.engine_args)

    @classmethod
    def state_traits(cls) -> set[str]:
        return {"n", "connection_file"}
