"""Batch scripts from templates, by pure functions (no I/O, no clock): golden-tested.

A template is Python format text.  These fields are available, with ipyparallel's names so
existing templates keep working:

=======================  =========================================================================
``{n}``                  number of engines (1 for a controller)
``{queue}``              queue / partition (``""`` when unset)
``{account}``            account / project to charge (``""`` when unset)
``{timelimit}``          wall-time limit as configured (``""`` when unset)
``{options}``            the extra directive lines (``c.<Launcher>.options``), rendered
``{program_and_args}``   the command to run, shell-quoted
``{program}``            the executable, shell-quoted
``{program_args}``       its arguments, shell-quoted
``{profile_dir}``        the profile directory
``{cluster_id}``         the cluster id
``{connection_file}``    path of the 0600 connection file (the key stays in it)
``{output_file}``        where the job's output should go
``{job_name}``           a name for the job
``{python}``             the Python executable the engines/controller run with
``{directives}``         every scheduler directive the launcher would write (the default templates
                         start with it): queue, account, time limit, output, job size, options
``{environment}``        ``export`` lines for the connection info and ``c.<Launcher>.environment``
=======================  =========================================================================

Literal braces (``${HOME}``) must be doubled in a template: ``${{HOME}}``.

The connection info reaches the job through its environment: the default scripts export
``IPCLUSTER_CONNECTION_FILE``, ``IPCLUSTER_PROFILE_DIR`` and ``IPCLUSTER_CLUSTER_ID``.  Only the
connection file's *path* appears in the script and on command lines; the key never does.
"""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ipcluster.errors import LauncherError


@dataclass(frozen=True)
class JobSpec:
    """Everything a batch script is rendered from (plain values)."""

    kind: str  # "controller" or "engines"
    n: int
    program: tuple[str, ...]
    job_name: str
    output_file: str
    profile_dir: str
    cluster_id: str
    connection_file: str
    python: str
    queue: str = ""
    account: str = ""
    timelimit: str = ""
    options: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, str], ...] = field(default=())  # backend-specific fields


def connection_environment(spec: JobSpec) -> list[tuple[str, str]]:
    """The variables through which a job learns its cluster, then the user's own ones."""
    return [
        ("IPCLUSTER_CONNECTION_FILE", spec.connection_file),
        ("IPCLUSTER_PROFILE_DIR", spec.profile_dir),
        ("IPCLUSTER_CLUSTER_ID", spec.cluster_id),
        *spec.environment,
    ]


def export_lines(variables: Sequence[tuple[str, str]]) -> str:
    """``export NAME=value`` lines (values shell-quoted); names must be valid shell identifiers."""
    lines = []
    for name, value in variables:
        if not name.isidentifier() or not name.isascii():
            raise LauncherError(f"environment variable name {name!r} is not a valid shell name")
        lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines)


def option_lines(prefix: str, options: Sequence[str]) -> list[str]:
    """Extra directives: ``"--mem=4G"`` becomes ``"#SBATCH --mem=4G"``; lines already starting
    with ``#`` are kept as they are."""
    out = []
    for opt in options:
        for line in opt.splitlines():
            line = line.strip()
            if line:
                out.append(line if line.startswith("#") else f"{prefix} {line}")
    return out


def template_fields(spec: JobSpec, directives: Sequence[str] = (), prefix: str = "#") -> dict[str, Any]:
    """The fields a template may use (see the module docstring).

    *directives* are the scheduler's directive lines for *spec*; *prefix* starts each line made
    from ``spec.options`` (``"#SBATCH"``).
    """
    program = list(spec.program)
    fields: dict[str, Any] = {
        "n": spec.n,
        "queue": spec.queue,
        "account": spec.account,
        "timelimit": spec.timelimit,
        "options": "\n".join(option_lines(prefix, spec.options)),
        "program_and_args": shlex.join(program),
        "program": shlex.quote(program[0]) if program else "",
        "program_args": shlex.join(program[1:]),
        "profile_dir": spec.profile_dir,
        "cluster_id": spec.cluster_id,
        "connection_file": spec.connection_file,
        "output_file": spec.output_file,
        "job_name": spec.job_name,
        "python": spec.python,
        "directives": "\n".join(directives),
        "environment": export_lines(connection_environment(spec)),
    }
    fields.update(dict(spec.extra))
    return fields


class _StrictFormatter(string.Formatter):
    """``str.format`` that names an unknown field instead of raising a bare KeyError."""

    def __init__(self, what: str):
        self.what = what

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):
            raise LauncherError(f"{self.what}: positional field {{{key}}} in the template; "
                                f"use named fields: {', '.join(sorted(kwargs))}")
        if key not in kwargs:
            raise LauncherError(f"{self.what}: unknown field {{{key}}} in the template "
                                f"(known: {', '.join(sorted(kwargs))}; write literal braces as {{{{ }}}})")
        return kwargs[key]


def render_template(template: str, fields: Mapping[str, Any], what: str = "batch template") -> str:
    """*template* with *fields* filled in; a clear :class:`LauncherError` for a bad template."""
    try:
        text = _StrictFormatter(what).vformat(template, (), dict(fields))
    except LauncherError:
        raise
    except (ValueError, IndexError, AttributeError) as e:
        raise LauncherError(f"{what}: malformed template: {e}") from None
    return text if text.endswith("\n") else text + "\n"


def render_script(template: str, spec: JobSpec, directives: Sequence[str] = (), prefix: str = "#",
                  what: str = "batch template") -> str:
    """Render *template* for *spec* with the scheduler's *directives* (see :func:`template_fields`)."""
    return render_template(template, template_fields(spec, directives, prefix), what)

