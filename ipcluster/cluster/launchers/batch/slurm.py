"""Slurm: ``sbatch --parsable`` submits, ``scontrol``/``sacct`` report, ``scancel`` cancels.

Engines are the tasks of one job (``#SBATCH --ntasks=N`` + ``srun``), so they may spread over
several nodes; the controller is a one-task job.  ``c.SlurmLauncher.queue`` is the partition::

    c.Cluster.engine_launcher_class = "slurm"
    c.SlurmLauncher.queue = "debug"          # --partition
    c.SlurmLauncher.account = "myproject"
    c.SlurmLauncher.timelimit = "2:00:00"
    c.SlurmLauncher.options = ["--mem-per-cpu=2G", "--qos=normal"]
"""

from __future__ import annotations

from typing import ClassVar

from traitlets import List, Unicode

from ipcluster.cluster.launchers.batch.base import (
    BatchControllerLauncher,
    BatchEngineSetLauncher,
    BatchLauncher,
    StatusSource,
)
from ipcluster.cluster.launchers.batch.status import parse_sacct, parse_scontrol_job
from ipcluster.cluster.launchers.batch.templates import JobSpec, option_lines


def slurm_directives(spec: JobSpec) -> list[str]:
    lines = [f"#SBATCH --job-name={spec.job_name}", f"#SBATCH --ntasks={spec.n}",
             f"#SBATCH --output={spec.output_file}", "#SBATCH --open-mode=append"]
    if spec.queue:
        lines.append(f"#SBATCH --partition={spec.queue}")
    if spec.account:
        lines.append(f"#SBATCH --account={spec.account}")
    if spec.timelimit:
        lines.append(f"#SBATCH --time={spec.timelimit}")
    return lines + option_lines("#SBATCH", spec.options)


SLURM_ENGINES_TEMPLATE = """\
#!/bin/bash
{directives}
{environment}
# one engine per task
srun {program_and_args}
"""

SLURM_CONTROLLER_TEMPLATE = """\
#!/bin/bash
{directives}
{environment}
exec {program_and_args}
"""


class SlurmLauncher(BatchLauncher):
    """Common options of the Slurm launchers (configure as ``c.SlurmLauncher.*``)."""

    name = "slurm"
    scheduler = "Slurm"
    directive_prefix = "#SBATCH"
    default_templates: ClassVar[dict[str, str]] = {
        "engines": SLURM_ENGINES_TEMPLATE, "controller": SLURM_CONTROLLER_TEMPLATE}
    one_engine_per_task = True

    submit_command = List(Unicode(), default_value=["sbatch", "--parsable"],
                          help="Command that submits the script (its path is appended).").tag(config=True)
    delete_command = List(Unicode(), default_value=["scancel"], help="Command that cancels the job.").tag(
        config=True
    )
    kill_command = List(Unicode(), default_value=["scancel", "--signal=KILL", "--full"],
                        help="Command that ends a job that survived delete_command.").tag(config=True)
    signal_command = List(Unicode(), default_value=["scancel", "--signal={signal}"],
                          help="Command that signals the job's tasks ('{signal}': e.g. INT).").tag(config=True)
    job_id_regexp = Unicode(r"^\d+", help="Finds the job id in sbatch --parsable's output "
                            "('ID' or 'ID;cluster').").tag(config=True)

    def status_sources(self) -> list[StatusSource]:
        return [(["scontrol", "show", "job", "-o", "{job_id}"], parse_scontrol_job),
                (["sacct", "-n", "-X", "-P", "-o", "JobID,State,ExitCode", "-j", "{job_id}"], parse_sacct)]

    def parse_job_id(self, output: str) -> str:
        import re

        m = re.search(self.job_id_regexp, output.strip(), flags=re.M)
        if m is None:
            return super().parse_job_id(output)
        return m.group(self.job_id_regexp_group)


    def directives(self, spec: JobSpec) -> list[str]:
        return slurm_directives(spec)

class SlurmControllerLauncher(SlurmLauncher, BatchControllerLauncher):
    """The controller as a one-task Slurm job."""


class SlurmEngineSetLauncher(SlurmLauncher, BatchEngineSetLauncher):
    """*n* engines as the *n* tasks of one Slurm job (``srun``)."""
