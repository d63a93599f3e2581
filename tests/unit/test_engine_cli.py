"""The engine command line, logging helpers, and the package's import boundaries."""

from __future__ import annotations

import ast
import logging
import pathlib

import pytest

import engines
from engines.__main__ import parse_args, wait_for_file
from engines.logs import LimitedLog

ENGINES_DIR = pathlib.Path(engines.__path__[0])


def test_parse_args():
    a = parse_args(["--file", "c.json", "-n", "4", "--log-level", "debug", "--work-dir", "/tmp"])
    assert (a.file, a.n, a.log_level, a.work_dir, a.log_file) == ("c.json", 4, "DEBUG", "/tmp", None)
    assert parse_args(["--file", "c.json"]).n is None


def test_parse_args_rejects_bad_n(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--file", "c.json", "-n", "0"])
    assert e.value.code == 2


def test_wait_for_file(tmp_path):
    f = tmp_path / "conn.json"
    assert not wait_for_file(str(f), timeout=0.03)
    f.write_text("{}")
    assert wait_for_file(str(f), timeout=0)


def test_limited_log_is_bounded(caplog):
    logger = logging.getLogger("test.limited")
    limited = LimitedLog(logger, first=3, every=10)
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        for _ in range(25):
            limited("drop", "dropped a message " + "x" * 500)
    assert limited.counts["drop"] == 25
    assert len(caplog.records) == 3 + 2  # #1-3, #10, #20
    assert all(len(r.getMessage()) < 250 for r in caplog.records)


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_engines_import_only_protocol_errors_gctune_and_schedpolicy_from_ipcluster():
    for path in ENGINES_DIR.glob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top != "controller", (path.name, name)
            if top == "ipcluster" and name != "ipcluster":
                # gctune and schedpolicy import nothing but gc and os
                assert name.startswith(("ipcluster.protocol", "ipcluster.errors", "ipcluster.gctune", "ipcluster.schedpolicy")), (path.name, name)


def test_ipython_is_imported_only_by_the_shell_module():
    # traitlets also by config.py, which __main__ imports only when there is an ipengine_config.py
    allowed = {"shell.py": {"IPython", "traitlets"}, "config.py": {"traitlets"}}
    for path in ENGINES_DIR.glob("*.py"):
        forbidden = {"IPython", "traitlets"} - allowed.get(path.name, set())
        assert not any(n.split(".")[0] in forbidden for n in _imports(path)), path.name
