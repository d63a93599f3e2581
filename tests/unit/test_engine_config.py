"""Engine configuration: ``ipengine_config.py``, the profile directory, and startup code."""

from __future__ import annotations

import ast
import logging
import os
import pathlib
import textwrap

import pytest

import engines
from engines.__main__ import CONFIG_FILE_NAME, main, parse_args, profile_dir_for, resolve_settings
from engines.config import EngineConfigError, IPEngine, load_engine_config
from engines.execution import Executor, StartupCode
from engines.output import OutputRouter

ENGINES_DIR = pathlib.Path(engines.__path__[0])


@pytest.fixture
def pdir(tmp_path):
    """A profile directory laid out as ``Cluster`` makes it, with a connection file path in it."""
    d = tmp_path / "profile_test"
    (d / "security").mkdir(parents=True)
    return d


def write_config(pdir: pathlib.Path, text: str) -> pathlib.Path:
    path = pdir / CONFIG_FILE_NAME
    path.write_text(textwrap.dedent(text))
    return path


def conn(pdir: pathlib.Path) -> str:
    return str(pdir / "security" / "ipcluster-x-connection.json")


# --- the profile directory --------------------------------------------------------------------


def test_profile_dir_is_derived_from_a_connection_file_in_security(pdir):
    assert profile_dir_for(conn(pdir)) == str(pdir)


def test_profile_dir_derivation_makes_relative_paths_absolute(pdir, monkeypatch):
    monkeypatch.chdir(pdir.parent)
    assert profile_dir_for(os.path.join(pdir.name, "security", "c.json")) == str(pdir)


def test_no_profile_dir_for_a_connection_file_elsewhere(tmp_path):
    assert profile_dir_for(str(tmp_path / "c.json")) is None


def test_explicit_profile_dir_wins(pdir, tmp_path):
    other = tmp_path / "other"
    assert profile_dir_for(conn(pdir), str(other)) == str(other)
    assert profile_dir_for(str(tmp_path / "c.json"), "~/p") == os.path.expanduser("~/p")


def test_parse_args_profile_dir_and_unset_defaults():
    a = parse_args(["--file", "c.json", "--profile-dir", "/p"])
    assert (a.profile_dir, a.log_level, a.work_dir) == ("/p", None, None)


# --- loading and merging ----------------------------------------------------------------------


def test_without_a_config_file_the_command_line_and_defaults_apply(pdir):
    s = resolve_settings(parse_args(["--file", conn(pdir)]))
    assert (s.log_level, s.work_dir, s.startup, s.config_file) == ("INFO", "", None, None)
    s = resolve_settings(parse_args(["--file", conn(pdir), "--log-level", "debug", "--work-dir", "/w"]))
    assert (s.log_level, s.work_dir) == ("DEBUG", "/w")


def test_config_file_values_are_used(pdir):
    path = write_config(pdir, """
        c.IPEngine.startup_command = "x = 1"
        c.IPEngine.startup_script = "setup.py"
        c.IPEngine.work_dir = "/scratch"
        c.IPEngine.log_level = "debug"
    """)
    s = resolve_settings(parse_args(["--file", conn(pdir)]))
    assert s.startup == StartupCode("x = 1", "setup.py")
    assert (s.log_level, s.work_dir, s.config_file) == ("DEBUG", "/scratch", str(path))


def test_command_line_wins_over_the_file(pdir):
    write_config(pdir, """
        c.IPEngine.work_dir = "/scratch"
        c.IPEngine.log_level = "DEBUG"
        c.IPEngine.startup_command = "x = 1"
    """)
    s = resolve_settings(parse_args(["--file", conn(pdir), "--log-level", "ERROR", "--work-dir", "/w"]))
    assert (s.log_level, s.work_dir, s.startup.command) == ("ERROR", "/w", "x = 1")


def test_explicit_profile_dir_is_where_the_file_is_read(pdir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_config(other, 'c.IPEngine.startup_command = "y = 2"')
    write_config(pdir, 'c.IPEngine.startup_command = "x = 1"')
    s = resolve_settings(parse_args(["--file", conn(pdir), "--profile-dir", str(other)]))
    assert s.startup.command == "y = 2"


def test_get_config_style_and_log_level_spellings(pdir):
    path = write_config(pdir, """
        import logging
        c = get_config()
        c.IPEngine.log_level = logging.WARNING
    """)
    assert load_engine_config(path).log_level == "WARNING"
    assert IPEngine(log_level="warn").log_level == "WARNING"
    assert IPEngine(log_level=10).log_level == "DEBUG"


def test_missing_file_gives_defaults(tmp_path):
    e = load_engine_config(tmp_path / CONFIG_FILE_NAME, {"work_dir": "/w"})
    assert (e.startup_command, e.startup_script, e.work_dir, e.log_level) == ("", "", "/w", "INFO")


def test_unknown_ipengine_option_is_a_warning_and_other_sections_are_ignored(pdir, engine_log):
    path = write_config(pdir, """
        c.IPEngine.use_mpi = True
        c.Session.key = b"x"
        c.IPEngine.startup_command = "x = 1"
    """)
    assert load_engine_config(path).startup_command == "x = 1"
    assert any("use_mpi" in r.getMessage() for r in engine_log)


def test_traitlets_is_imported_only_when_there_is_a_config_file():
    """__main__ imports engines.config (traitlets) inside a function, never at module level."""
    tree = ast.parse((ENGINES_DIR / "__main__.py").read_text())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert "engines.config" not in top and "traitlets" not in top


# --- broken config files ----------------------------------------------------------------------


@pytest.mark.parametrize("text, error, line", [
    ("c.IPEngine.startup_command = 'x'\nc.IPEngine.work_dir = (\n", "SyntaxError", 2),
    ("c.IPEngine.work_dir = '/w'\nraise RuntimeError('no scratch')\n", "RuntimeError: no scratch", 2),
    ("c.IPEngine.work_dir = undefined_name\n", "NameError", 1),
    ("import sys\nsys.exit(3)\n", "SystemExit", 2),
])
def test_broken_file_names_the_file_and_line(pdir, text, error, line):
    path = write_config(pdir, text)
    with pytest.raises(EngineConfigError) as e:
        load_engine_config(path)
    assert str(e.value).startswith(f"error in {path}, line {line}: ")
    assert str(e.value).count(path.name) == 1  # a SyntaxError's own "(file, line)" is not repeated
    assert error in str(e.value)
    assert e.value.path == str(path)


@pytest.mark.parametrize("text", ["c.IPEngine.startup_command = 42", "c.IPEngine.log_level = 'LOUD'"])
def test_bad_value_names_the_file(pdir, text):
    path = write_config(pdir, text)
    with pytest.raises(EngineConfigError, match=f"error in {path}: TraitError"):
        load_engine_config(path)


def test_main_exits_2_with_a_message_naming_the_broken_file(pdir, capsys, engine_log):
    path = write_config(pdir, "c.IPEngine.startup_command = 'x'\n1/0\n")
    # the connection file does not exist: the config is checked before waiting for it
    assert main(["--file", conn(pdir), "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert f"ipcluster-engine: error in {path}, line 2: ZeroDivisionError" in err


# --- startup code -----------------------------------------------------------------------------


@pytest.fixture
def executor():
    return Executor(OutputRouter(lambda *a: None), "uuid-1")


def test_startup_command_then_script_run_in_the_user_namespace(executor, tmp_path, engine_log):
    script = tmp_path / "setup_engine.py"
    script.write_text("from_script = (command_value, __file__)\n")
    executor.run_startup(StartupCode("command_value = 42", str(script)))
    ns = executor.user_ns
    assert ns["command_value"] == 42
    assert ns["from_script"] == (42, str(script))
    assert "__file__" not in ns  # set only while the script runs
    assert ns["__name__"] == "__main__"


def test_relative_script_is_taken_from_the_working_directory(executor, tmp_path, monkeypatch, engine_log):
    (tmp_path / "s.py").write_text("ran = True\n")
    monkeypatch.chdir(tmp_path)
    executor.run_startup(StartupCode(script="s.py"))
    assert executor.user_ns["ran"] is True


def test_startup_errors_are_logged_with_the_traceback_and_do_not_stop(executor, tmp_path, engine_log):
    script = tmp_path / "bad.py"
    script.write_text("before = 1\n\ndef f():\n    raise ValueError('bad script')\n\nf()\n")
    executor.run_startup(StartupCode("a = 1\nb = 1/0", str(script)))
    ns = executor.user_ns
    assert (ns["a"], ns["before"]) == (1, 1)  # the command's error did not skip the script
    errors = [r.getMessage() for r in engine_log if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert errors[0].startswith("startup_command failed")
    assert 'File "<startup_command>", line 2' in errors[0] and "ZeroDivisionError" in errors[0]
    assert f"startup_script {script} failed" in errors[1]
    assert f'File "{script}", line 6' in errors[1] and "line 4, in f" in errors[1]
    assert "ValueError: bad script" in errors[1]
    assert "execution.py" not in errors[0] + errors[1]  # only the user's frames
    assert not executor.running


@pytest.mark.parametrize("startup, expected", [
    (StartupCode("x = ("), "SyntaxError"),
    (StartupCode("raise SystemExit(1)"), "SystemExit: 1"),
    (StartupCode(script="/nonexistent/setup.py"), "FileNotFoundError"),
])
def test_any_startup_failure_is_logged(executor, engine_log, startup, expected):
    executor.run_startup(startup)
    errors = [r.getMessage() for r in engine_log if r.levelno == logging.ERROR]
    assert len(errors) == 1 and expected in errors[0]


def test_interrupted_startup_is_a_warning_and_ends_the_startup(executor, engine_log, tmp_path):
    script = tmp_path / "s.py"
    script.write_text("from_script = 1\n")
    executor.run_startup(StartupCode("x = 1\nraise KeyboardInterrupt\ny = 2", str(script)))
    assert executor.user_ns["x"] == 1 and "y" not in executor.user_ns
    assert "from_script" not in executor.user_ns
    [record] = [r for r in engine_log if r.levelno >= logging.WARNING]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("startup_command interrupted")
    assert 'File "<startup_command>", line 2' in record.getMessage()


def test_script_keeps_an_existing_file_name(executor, tmp_path, engine_log):
    script = tmp_path / "s.py"
    script.write_text("seen = __file__\n")
    executor.user_ns["__file__"] = "user value"
    executor.run_startup(StartupCode(script=str(script)))
    assert (executor.user_ns["seen"], executor.user_ns["__file__"]) == (str(script), "user value")


def test_empty_startup_code_is_false():
    assert not StartupCode() and StartupCode("x = 1") and StartupCode(script="s.py")
