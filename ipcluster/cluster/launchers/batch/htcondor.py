"""HTCondor: ``condor_submit`` submits a submit description, ``condor_q`` / ``condor_history``
report, ``condor_rm`` cancels.

The job file is a submit description, not a shell script: the default template runs the Python
program directly (``executable``/``arguments``) with the connection info in ``environment``.  The
engines run under one supervisor in one job (``request_cpus = N``).  This launcher is tested
against small fake ``condor_*`` commands (``tests/launchers/shims/``), not a real HTCondor::

    c.Cluster.engine_launcher_class = "htcondor"
    c.HTCondorLauncher.options = ["request_memory = 2GB", "requirements = (OpSys == \\"LINUX\\")"]

Extra template fields: ``{condor_executable}``, ``{condor_arguments}``, ``{condor_environment}``
(values quoted the way submit descriptions want them).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Sequence

from traitlets import Integer, List, Unicode

from ipcluster.cluster.launchers.batch.base import (
    BatchControllerLauncher,
    BatchEngineSetLauncher,
    BatchLauncher,
    StatusSource,
)
from ipcluster.cluster.launchers.batch.status import parse_condor_af
from ipcluster.cluster.launchers.batch.templates import JobSpec, connection_environment
from ipcluster.errors import LauncherError


def condor_quote(args: Sequence[str]) -> str:
    """Arguments in the submit-description "new syntax": double-quoted as a whole, an argument with
    spaces in single quotes, ``'`` written ``''`` and ``"`` written ``""``."""
    parts = []
    for arg in args:
        text = arg.replace('"', '""').replace("'", "''")
        parts.append(f"'{text}'" if (not arg or any(c.isspace() for c in arg) or "'" in arg) else text)
    return '"' + " ".join(parts) + '"'


def seconds(timelimit: str) -> int:
    """``"90"``, ``"1:30"`` (minutes:seconds) or ``"1:30:00"`` (hours:minutes:seconds) in seconds."""
    parts = timelimit.strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise LauncherError(f"HTCondor timelimit {timelimit!r}: expected seconds, M:SS or H:MM:SS")
    total = 0
    for part in parts:
        total = total * 60 + int(part)
    return total


def condor_directives(spec: JobSpec) -> list[str]:
    lines = ["universe = vanilla", f"batch_name = {spec.job_name}", f"output = {spec.output_file}",
             f"error = {spec.output_file}", f"request_cpus = {spec.n}"]
    if spec.account:
        lines.append(f"accounting_group = {spec.account}")
    if spec.timelimit:
        limit = seconds(spec.timelimit)
        lines.append(f"periodic_remove = (JobStatus == 2) && (time() - EnteredCurrentStatus > {limit})")
    # options are submit-file lines already ("request_memory = 2GB")
    return lines + [line.strip() for opt in spec.options for line in opt.splitlines() if line.strip()]


HTCONDOR_TEMPLATE = """\
{directives}
executable = {condor_executable}
arguments = {condor_arguments}
environment = {condor_environment}
queue 1
"""


class HTCondorLauncher(BatchLauncher):
    """Common options of the HTCondor launchers (configure as ``c.HTCondorLauncher.*``).

    ``timelimit`` (seconds, M:SS or H:MM:SS of running time) is enforced with
    ``periodic_remove``; ``queue`` is not used (HTCondor has none).
    """

    name = "htcondor"
    scheduler = "HTCondor"
    directive_prefix = ""
    default_templates: ClassVar[dict[str, str]] = {"engines": HTCONDOR_TEMPLATE, "controller": HTCONDOR_TEMPLATE}
    script_suffix = ".sub"

    submit_command = List(Unicode(), default_value=["condor_submit"],
                          help="Command that submits the description (its path is appended).").tag(
        config=True
    )
    delete_command = List(Unicode(), default_value=["condor_rm"], help="Command that removes the job.").tag(
        config=True
    )
    kill_command = List(Unicode(), default_value=["condor_rm", "-forcex"],
                        help="Command that ends a job that survived delete_command.").tag(config=True)
    job_id_regexp = Unicode(r"submitted to cluster (\d+)",
                            help="Finds the job (cluster) id in condor_submit's output.").tag(config=True)
    job_id_regexp_group = Integer(1, help="The group of job_id_regexp that is the id.").tag(config=True)

    def job_spec(self) -> JobSpec:
        spec = super().job_spec()
        env = " ".join(f"{name}={value}" for name, value in connection_environment(spec))
        extra = (("condor_executable", spec.program[0]), ("condor_arguments", condor_quote(spec.program[1:])),
                 ("condor_environment", condor_quote([f"{k}={v}" for k, v in connection_environment(spec)])
                  if env else '""'))
        return replace(spec, extra=(*spec.extra, *extra))

    def status_sources(self) -> list[StatusSource]:
        return [(["condor_q", "{job_id}", "-af", "JobStatus", "ExitCode"], parse_condor_af),
                (["condor_history", "{job_id}", "-af", "JobStatus", "ExitCode", "-limit", "1"], parse_condor_af)]


    def directives(self, spec: JobSpec) -> list[str]:
        return condor_directives(spec)

class HTCondorControllerLauncher(HTCondorLauncher, BatchControllerLauncher):
    """The controller as an HTCondor job."""


class HTCondorEngineSetLauncher(HTCondorLauncher, BatchEngineSetLauncher):
    """*n* engines under one supervisor in one HTCondor job."""
