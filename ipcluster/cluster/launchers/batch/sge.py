"""(Son of) Grid Engine: ``qsub -terse`` submits, ``qstat``/``qacct`` report, ``qdel`` cancels.

Engines are the tasks of one array job (``#$ -t 1-N``), one engine per task, so they may spread
over several hosts without a parallel environment.  Clients need ``SGE_ROOT`` (and ``SGE_CELL``)
in the environment, as for any Grid Engine command::

    c.Cluster.engine_launcher_class = "sge"
    c.SGELauncher.queue = "all.q"
    c.SGELauncher.timelimit = "2:00:00"        # -l h_rt
    c.SGELauncher.options = ["-l mem_free=2G"]
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
from ipcluster.cluster.launchers.batch.status import parse_sge_qacct, parse_sge_qstat
from ipcluster.cluster.launchers.batch.templates import JobSpec, option_lines


def sge_directives(spec: JobSpec) -> list[str]:
    lines = [f"#$ -N {spec.job_name}", "#$ -S /bin/bash", f"#$ -o {spec.output_file}", "#$ -j y"]
    if spec.kind == "engines":
        lines.append(f"#$ -t 1-{spec.n}")
    if spec.queue:
        lines.append(f"#$ -q {spec.queue}")
    if spec.account:
        lines.append(f"#$ -A {spec.account}")
    if spec.timelimit:
        lines.append(f"#$ -l h_rt={spec.timelimit}")
    return lines + option_lines("#$", spec.options)


SGE_TEMPLATE = """\
#!/bin/bash
{directives}
{environment}
exec {program_and_args}
"""


class SGELauncher(BatchLauncher):
    """Common options of the Grid Engine launchers (configure as ``c.SGELauncher.*``)."""

    name = "sge"
    scheduler = "SGE"
    directive_prefix = "#$"
    default_templates: ClassVar[dict[str, str]] = {"engines": SGE_TEMPLATE, "controller": SGE_TEMPLATE}
    one_engine_per_task = True

    submit_command = List(Unicode(), default_value=["qsub", "-terse"],
                          help="Command that submits the script (its path is appended).").tag(config=True)
    delete_command = List(Unicode(), default_value=["qdel"], help="Command that cancels the job.").tag(
        config=True
    )
    kill_command = List(Unicode(), default_value=["qdel", "-f"],
                        help="Command that ends a job that survived delete_command.").tag(config=True)
    job_id_regexp = Unicode(r"^\d+", help="Finds the job id in qsub -terse's output ('ID' or "
                            "'ID.1-N:1' for an array).").tag(config=True)

    def status_sources(self) -> list[StatusSource]:
        return [(["qstat"], parse_sge_qstat), (["qacct", "-j", "{job_id}"], parse_sge_qacct)]

    def parse_job_id(self, output: str) -> str:
        import re

        m = re.search(self.job_id_regexp, output.strip(), flags=re.M)
        return m.group(self.job_id_regexp_group) if m else super().parse_job_id(output)


    def directives(self, spec: JobSpec) -> list[str]:
        return sge_directives(spec)

class SGEControllerLauncher(SGELauncher, BatchControllerLauncher):
    """The controller as a Grid Engine job."""


class SGEEngineSetLauncher(SGELauncher, BatchEngineSetLauncher):
    """*n* engines as the *n* tasks of one Grid Engine array job."""
