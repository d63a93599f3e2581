"""Option parsing of the parallel magics (pure)."""

from __future__ import annotations

import pytest

from ipcluster.magics.options import (OptionError, PxSettings, format_targets, parse_config, parse_targets,
                                      split_options)


@pytest.mark.parametrize("text, expected", [
    ("all", "all"), ("3", 3), ("-1", -1), ("0,2", [0, 2]), ("[0, 2, 3]", [0, 2, 3]), ("[1]", 1),
    ("::2", slice(None, None, 2)), ("1:3", slice(1, 3)), ("1:", slice(1, None)), ("-2:", slice(-2, None)),
])
def test_parse_targets(text, expected):
    assert parse_targets(text) == expected


@pytest.mark.parametrize("text", ["", "x", "1:2:0", "0;2", "a,b"])
def test_bad_targets_name_the_problem(text):
    with pytest.raises(OptionError, match="--targets"):
        parse_targets(text)


@pytest.mark.parametrize("targets", ["all", 2, [0, 3], slice(None, None, 2), slice(1, 3), slice(-2, None)])
def test_format_targets_round_trips(targets):
    assert parse_targets(format_targets(targets)) == targets


def test_options_before_code_and_code_kept_verbatim():
    opts, code = split_options("--targets ::2 --noblock -o res   x = {'a':  1}  # -v")
    assert opts.settings == {"targets": slice(None, None, 2), "block": False}
    assert opts.out == "res" and not opts.local
    assert code == "x = {'a':  1}  # -v"


def test_every_option_and_inline_values():
    opts, code = split_options("--block --stream --verbose --local --group-outputs=engine -t [0, 1] "
                               "--out=r print(1)")
    assert opts.settings == {"block": True, "stream": True, "verbose": True, "group_outputs": "engine",
                             "targets": [0, 1]}
    assert opts.local and opts.out == "r" and code == "print(1)"
    opts, _ = split_options("--no-stream --no-block --no-verbose -v", allow_code=False)
    assert opts.settings == {"stream": False, "block": False, "verbose": True}


def test_code_without_options_and_double_dash():
    assert split_options("print(-1)")[1] == "print(-1)"
    assert split_options("-1 + 2")[1] == "-1 + 2"  # no option looks like that
    opts, code = split_options("--targets 0 -- -x")
    assert opts.settings == {"targets": 0} and code == "-x"
    assert split_options("   ")[1] == ""


@pytest.mark.parametrize("line, message", [
    ("--bogus 1", "unknown option '--bogus'"),
    ("-x", "unknown option '-x'"),
    ("--targets", "needs a value"),
    ("--group-outputs sideways", "expected one of type, engine, order"),
    ("--block=yes", "takes no value"),
    ("-o 1abc x", "not a valid Python name"),
    ("--targets '0 x", "unterminated quote"),
])
def test_bad_options_are_errors(line, message):
    with pytest.raises(OptionError, match=message):
        split_options(line)


def test_cell_lines_take_only_options():
    opts, code = split_options("--targets 1 --local", allow_code=False)
    assert opts.settings == {"targets": 1} and opts.local and code == ""
    with pytest.raises(OptionError, match="only options"):
        split_options("--targets 1 print(1)", allow_code=False)


def test_resolve_applies_line_options_over_defaults():
    defaults = PxSettings(targets=[0], block=False)
    opts, _ = split_options("--block --group-outputs order")
    s = opts.resolve(defaults)
    assert (s.targets, s.block, s.group_outputs, s.stream) == ([0], True, "order", True)
    assert defaults.block is False  # defaults untouched
    assert "non-blocking" in defaults.describe() and "targets: 0" in defaults.describe()


def test_parse_config_refuses_per_run_options():
    assert parse_config("--targets all --noblock --no-stream") == {"targets": "all", "block": False, "stream": False}
    for line in ("--local", "-o x"):
        with pytest.raises(OptionError, match="one run only"):
            parse_config(line)
    with pytest.raises(OptionError, match="only options"):
        parse_config("--block print(1)")


def test_magics_package_and_extension_hook_do_not_import_ipython():
    from tests.unit.test_imports import loaded_after

    imports = "import ipcluster.magics, ipcluster.magics.options\nipcluster.load_ipython_extension"
    assert loaded_after(imports, ["IPython", "zmq", "ipcluster.client"]) == []
