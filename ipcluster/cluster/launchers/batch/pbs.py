"""PBS / Torque: ``qsub`` submits, ``qstat -f`` reports, ``qdel`` cancels.

The engines run under one supervisor in one job on one node (``#PBS -l nodes=1:ppn=N``, Torque
syntax; PBS Pro users set ``c.PBSLauncher.options = ["-l select=1:ncpus=N"]`` and
``resource_directive = False``, or their own ``batch_template``).  The script also sends its own
output to the log (``exec >> log``) because some qsub front ends ignore ``#PBS -o``::

    c.Cluster.engine_launcher_class = "pbs"
    c.PBSLauncher.queue = "batch"
    c.PBSLauncher.account = "myproject"
    c.PBSLauncher.timelimit = "2:00:00"        # -l walltime
"""

from __future__ import annotations

from typing import ClassVar

from traitlets import Bool, List, Unicode

from ipcluster.cluster.launchers.batch.base import (
    BatchControllerLauncher,
    BatchEngineSetLauncher,
    BatchLauncher,
    StatusSource,
)
from ipcluster.cluster.launchers.batch.status import parse_pbs_qstat_f
from ipcluster.cluster.launchers.batch.templates import JobSpec, option_lines


def pbs_directives(spec: JobSpec) -> list[str]:
    lines = [f"#PBS -N {spec.job_name}", f"#PBS -o {spec.output_file}", "#PBS -j oe"]
    if dict(spec.extra).get("resource_directive", "1") == "1":
        lines.append(f"#PBS -l nodes=1:ppn={spec.n}")
    if spec.queue:
        lines.append(f"#PBS -q {spec.queue}")
    if spec.account:
        lines.append(f"#PBS -A {spec.account}")
    if spec.timelimit:
        lines.append(f"#PBS -l walltime={spec.timelimit}")
    return lines + option_lines("#PBS", spec.options)


PBS_TEMPLATE = """\
#!/bin/bash
{directives}
{environment}
exec >>"{output_file}" 2>&1
exec {program_and_args}
"""


class PBSLauncher(BatchLauncher):
    """Common options of the PBS / Torque launchers (configure as ``c.PBSLauncher.*``)."""

    name = "pbs"
    scheduler = "PBS"
    directive_prefix = "#PBS"
    default_templates: ClassVar[dict[str, str]] = {"engines": PBS_TEMPLATE, "controller": PBS_TEMPLATE}

    submit_command = List(Unicode(), default_value=["qsub"],
                          help="Command that submits the script (its path is appended).").tag(config=True)
    delete_command = List(Unicode(), default_value=["qdel"], help="Command that cancels the job.").tag(
        config=True
    )
    job_id_regexp = Unicode(r"\d+(\.[\w.-]+)?", help="Finds the job id in qsub's output "
                            "('123' or '123.server').").tag(config=True)
    resource_directive = Bool(True, help="Write '#PBS -l nodes=1:ppn=N' (Torque syntax).").tag(config=True)

    def job_spec(self) -> JobSpec:
        from dataclasses import replace

        spec = super().job_spec()
        return replace(spec, extra=(*spec.extra, ("resource_directive", "1" if self.resource_directive else "0")))

    def status_sources(self) -> list[StatusSource]:
        return [(["qstat", "-f", "{job_id}"], parse_pbs_qstat_f)]


    def directives(self, spec: JobSpec) -> list[str]:
        return pbs_directives(spec)

class PBSControllerLauncher(PBSLauncher, BatchControllerLauncher):
    """The controller as a PBS job."""


class PBSEngineSetLauncher(PBSLauncher, BatchEngineSetLauncher):
    """*n* engines under one supervisor in one PBS job."""
