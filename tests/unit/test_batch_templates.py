"""Batch scripts rendered from templates: golden files for every backend's default templates,
ipyparallel-style user templates, and clear errors for bad ones.

Regenerate the golden files after an intended change with
``IPCLUSTER_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_batch_templates.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcluster.cluster.launchers import find_launcher_class
from ipcluster.cluster.launchers.batch.htcondor import condor_quote, seconds
from ipcluster.cluster.launchers.batch.templates import (
    JobSpec,
    export_lines,
    option_lines,
    render_script,
    render_template,
    template_fields,
)
from ipcluster.errors import LauncherError

GOLDEN = Path(__file__).parent / "batch_golden"
BACKENDS = ["slurm", "sge", "pbs", "lsf", "htcondor"]

COMMON = dict(profile_dir="/home/u/.ipython/profile_hpc", cluster_id="c1", log_path="/home/u/.ipython/profile_hpc/log/x.log",
              python_executable="/opt/venv/bin/python")


def launcher(name: str, kind: str, **traits):
    cls = find_launcher_class(kind, name)
    opts = dict(COMMON, **traits)
    if kind == "engines":
        opts.setdefault("n", 4)
        opts.setdefault("connection_file", "/home/u/.ipython/profile_hpc/security/ipcluster-c1-connection.json")
    return cls(**opts)


@pytest.mark.parametrize("kind", ["engines", "controller"])
@pytest.mark.parametrize("name", BACKENDS)
def test_default_template_golden(name, kind):
    text = launcher(name, kind, queue="short", account="proj42", timelimit="1:30:00",
                    options=["--extra-a", "--extra-b"] if name != "htcondor" else ["request_memory = 2GB"],
                    environment={"OMP_NUM_THREADS": "1"}).render()
    path = GOLDEN / f"{name}-{kind}.txt"
    if os.environ.get("IPCLUSTER_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


@pytest.mark.parametrize("name", BACKENDS)
def test_minimal_settings_write_no_empty_directives(name):
    text = launcher(name, "engines").render()
    assert "-q \n" not in text and "--partition=\n" not in text and "-A \n" not in text
    assert "ipcluster-c1-connection.json" in text
    assert "key" not in text.lower()  # the key stays in the 0600 connection file


def test_no_secret_in_scripts(tmp_path):
    """Rendering never reads the connection file, so its key cannot leak into a script."""
    conn = tmp_path / "conn.json"
    conn.write_text('{"key": "s3cr3t-key"}')
    for name in BACKENDS:
        text = launcher(name, "engines", connection_file=str(conn)).render()
        assert "s3cr3t" not in text and str(conn) in text


def test_ipyparallel_field_names():
    template = ("#!/bin/sh\n#PBS -q {queue}\n#PBS -A {account}\n#PBS -l nodes=1:ppn={n}\n"
                "cd {profile_dir}\necho {cluster_id}\n{program_and_args}\n")
    text = launcher("pbs", "engines", batch_template=template, queue="q1", account="a1").render()
    assert text == ("#!/bin/sh\n#PBS -q q1\n#PBS -A a1\n#PBS -l nodes=1:ppn=4\ncd /home/u/.ipython/profile_hpc\n"
                    "echo c1\n/opt/venv/bin/python -P -m engines --file "
                    "/home/u/.ipython/profile_hpc/security/ipcluster-c1-connection.json -n 4\n")


def test_one_engine_per_task_where_the_scheduler_starts_tasks():
    assert "-n 4" not in launcher("slurm", "engines").render()  # srun starts 4 tasks
    assert "-n 4" not in launcher("sge", "engines").render()  # array of 4 tasks
    for name in ("pbs", "lsf", "htcondor"):  # one supervisor forks 4 engines
        assert "-n 4" in launcher(name, "engines").render()


def test_template_file(tmp_path):
    f = tmp_path / "t.sh"
    f.write_text("#!/bin/bash\n#SBATCH -n {n}\nsrun {program}\n")
    text = launcher("slurm", "engines", batch_template_file=str(f)).render()
    assert text == "#!/bin/bash\n#SBATCH -n 4\nsrun /opt/venv/bin/python\n"


def test_missing_template_file():
    with pytest.raises(LauncherError, match="cannot read batch_template_file"):
        launcher("slurm", "engines", batch_template_file="/nonexistent/t.sh").render()


def test_unknown_field_is_named():
    with pytest.raises(LauncherError, match=r"unknown field \{nodes\}.*known: .*program_and_args"):
        launcher("slurm", "engines", batch_template="#SBATCH -N {nodes}\n").render()


def test_literal_braces_and_malformed_template():
    assert render_template("echo ${{HOME}} {n}", {"n": 2}) == "echo ${HOME} 2\n"
    with pytest.raises(LauncherError, match="malformed template"):
        render_template("echo ${HOME", {"n": 2})
    with pytest.raises(LauncherError, match="positional field"):
        render_template("echo {0}", {"n": 2})


def test_generic_batch_needs_a_template():
    with pytest.raises(LauncherError, match="no default template.*BatchEngineSetLauncher.batch_template"):
        launcher("batch", "engines").render()
    text = launcher("batch", "engines", batch_template="run {program_and_args}").render()
    assert text.startswith("run /opt/venv/bin/python -P -m engines")


def test_fields_are_pure_and_quote_paths():
    spec = JobSpec(kind="engines", n=2, program=("/p y/python", "-m", "engines", "--file", "/a b/c.json"),
                   job_name="j", output_file="/o", profile_dir="/pd", cluster_id="",
                   connection_file="/a b/c.json", python="/p y/python", options=("--mem=1G",))
    fields = template_fields(spec, ["#X a"], "#X")
    assert fields == template_fields(spec, ["#X a"], "#X")  # no hidden inputs
    assert fields["program_and_args"] == "'/p y/python' -m engines --file '/a b/c.json'"
    assert fields["program"] == "'/p y/python'"
    assert fields["options"] == "#X --mem=1G"
    assert "export IPCLUSTER_CONNECTION_FILE='/a b/c.json'" in fields["environment"]
    assert render_script("{directives}", spec, ["#X a", "#X b"]) == "#X a\n#X b\n"


def test_option_lines_and_exports():
    assert option_lines("#SBATCH", ["--mem=1G", "#SBATCH --exclusive\n\n --qos=low "]) == [
        "#SBATCH --mem=1G", "#SBATCH --exclusive", "#SBATCH --qos=low"]
    assert export_lines([("A", "x y"), ("B", "'")]) == "export A='x y'\nexport B=''\"'\"''"
    with pytest.raises(LauncherError, match="not a valid shell name"):
        export_lines([("BAD-NAME", "1")])


def test_options_as_one_string():
    text = launcher("slurm", "engines", options="--mem=1G\n--qos=low").render()
    assert "#SBATCH --mem=1G\n#SBATCH --qos=low\n" in text


def test_condor_timelimit():
    assert seconds("90") == 90 and seconds("1:30") == 90 and seconds("1:30:00") == 5400
    with pytest.raises(LauncherError, match="H:MM:SS"):
        seconds("1 hour")


def test_condor_quote():
    assert condor_quote(["-m", "engines"]) == '"-m engines"'
    assert condor_quote(["a b", "it's", 'say "hi"', ""]) == '"\'a b\' \'it\'\'s\' \'say ""hi""\' \'\'"'
