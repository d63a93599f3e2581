"""LSF: ``bsub < script`` submits, ``bjobs`` reports, ``bkill`` cancels.

The engines run under one supervisor in one job on one host (``#BSUB -n N`` with
``span[hosts=1]``).  This launcher is tested against small fake ``bsub``/``bjobs``/``bkill``
commands (``tests/launchers/shims/``), not a real LSF::

    c.Cluster.engine_launcher_class = "lsf"
    c.LSFLauncher.queue = "normal"
    c.LSFLauncher.account = "myproject"        # -P
    c.LSFLauncher.timelimit = "2:00"           # -W [hours:]minutes
"""

from __future__ import annotations

from typing import ClassVar

from traitlets import Integer, List, Unicode

from ipcluster.cluster.launchers.batch.base import (
    BatchControllerLauncher,
    BatchEngineSetLauncher,
    BatchLauncher,
    StatusSource,
)
from ipcluster.cluster.launchers.batch.status import parse_bjobs
from ipcluster.cluster.launchers.batch.templates import JobSpec, option_lines


def lsf_directives(spec: JobSpec) -> list[str]:
    lines = [f"#BSUB -J {spec.job_name}", f"#BSUB -n {spec.n}", '#BSUB -R "span[hosts=1]"',
             f"#BSUB -o {spec.output_file}"]
    if spec.queue:
        lines.append(f"#BSUB -q {spec.queue}")
    if spec.account:
        lines.append(f"#BSUB -P {spec.account}")
    if spec.timelimit:
        lines.append(f"#BSUB -W {spec.timelimit}")
    return lines + option_lines("#BSUB", spec.options)


LSF_TEMPLATE = """\
#!/bin/bash
{directives}
{environment}
exec {program_and_args}
"""


class LSFLauncher(BatchLauncher):
    """Common options of the LSF launchers (configure as ``c.LSFLauncher.*``)."""

    name = "lsf"
    scheduler = "LSF"
    directive_prefix = "#BSUB"
    default_templates: ClassVar[dict[str, str]] = {"engines": LSF_TEMPLATE, "controller": LSF_TEMPLATE}
    submit_on_stdin = True  # bsub reads #BSUB directives only from a script on standard input

    submit_command = List(Unicode(), default_value=["bsub"],
                          help="Command that submits the script (given on its standard input).").tag(
        config=True
    )
    delete_command = List(Unicode(), default_value=["bkill"], help="Command that cancels the job.").tag(
        config=True
    )
    kill_command = List(Unicode(), default_value=["bkill", "-s", "KILL"],
                        help="Command that ends a job that survived delete_command.").tag(config=True)
    signal_command = List(Unicode(), default_value=["bkill", "-s", "{signal}"],
                          help="Command that signals the job ('{signal}': e.g. INT).").tag(config=True)
    job_id_regexp = Unicode(r"Job <(\d+)>", help="Finds the job id in bsub's output.").tag(config=True)
    job_id_regexp_group = Integer(1, help="The group of job_id_regexp that is the id.").tag(config=True)

    def status_sources(self) -> list[StatusSource]:
        return [(["bjobs", "{job_id}"], parse_bjobs)]


    def directives(self, spec: JobSpec) -> list[str]:
        return lsf_directives(spec)

class LSFControllerLauncher(LSFLauncher, BatchControllerLauncher):
    """The controller as an LSF job."""


class LSFEngineSetLauncher(LSFLauncher, BatchEngineSetLauncher):
    """*n* engines under one supervisor in one LSF job."""
