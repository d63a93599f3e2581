"""Options of the parallel magics: parsing ``%px`` / ``%%px`` / ``%pxconfig`` argument text.

Pure functions, no IPython: ``%px`` puts its options in front of the code on the same line
(``%px --targets ::2 import os``), so the parser consumes known options from the left and hands
back the rest of the line untouched as code.  ``--`` ends the options (for code that starts with
``-``).  Anything else that looks like an option is an error naming it, never silently code.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

#: Valid values of ``--group-outputs``.
GROUPINGS = ("type", "engine", "order")


class OptionError(ValueError):
    """Bad magic arguments; the message names the option and what was expected."""


@dataclasses.dataclass
class PxSettings:
    """Defaults of one set of magics, changed by ``%pxconfig``.

    ``targets=None`` means the view's own targets.
    """

    targets: Any = None
    block: bool = True
    group_outputs: str = "type"
    stream: bool = True
    verbose: bool = False

    def describe(self) -> str:
        targets = "the view's targets" if self.targets is None else format_targets(self.targets)
        return (f"targets: {targets}; {'blocking' if self.block else 'non-blocking'}; "
                f"group outputs by {self.group_outputs}; "
                f"{'streaming' if self.stream else 'not streaming'} output; "
                f"verbose {'on' if self.verbose else 'off'}")


@dataclasses.dataclass
class PxOptions:
    """What one magic line asked for: settings given explicitly, plus per-run choices."""

    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    local: bool = False
    out: str | None = None

    def resolve(self, defaults: PxSettings) -> PxSettings:
        """The settings for this run: the defaults with this line's options applied."""
        return dataclasses.replace(defaults, **self.settings)


# name -> (setting, value or None when the option takes an argument)
_FLAGS: dict[str, tuple[str, Any]] = {
    "--block": ("block", True),
    "--noblock": ("block", False),
    "--no-block": ("block", False),
    "--stream": ("stream", True),
    "--no-stream": ("stream", False),
    "--verbose": ("verbose", True),
    "-v": ("verbose", True),
    "--no-verbose": ("verbose", False),
    "--local": ("local", True),
    "--targets": ("targets", None),
    "-t": ("targets", None),
    "--group-outputs": ("group_outputs", None),
    "--out": ("out", None),
    "-o": ("out", None),
}
#: options that change one run only, not a setting (refused by %pxconfig)
_PER_RUN = {"local", "out"}

_SLICE = re.compile(r"^(-?\d*):(-?\d*)(?::(-?\d*))?$")


def parse_targets(text: str) -> Any:
    """``all`` | an int | a slice ``start:stop:step`` | a list ``0,2,3`` / ``[0, 2, 3]``."""
    t = text.strip()
    if t == "all":
        return "all"
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    m = _SLICE.match(t)
    if m:
        parts = [int(p) if p else None for p in m.groups()]
        if parts[2] == 0:
            raise OptionError(f"--targets {text!r}: slice step cannot be zero")
        return slice(*parts)
    try:
        if "," in t:
            return [int(p) for p in t.split(",") if p.strip()]
        return int(t)
    except ValueError:
        raise OptionError(f"--targets {text!r}: expected 'all', an engine id, a list like 0,2 or a slice "
                          "like ::2") from None


def format_targets(targets: Any) -> str:
    """Targets as one would type them after ``--targets``."""
    if isinstance(targets, slice):
        parts = ["" if p is None else str(p) for p in (targets.start, targets.stop, targets.step)]
        return ":".join(parts[:2] if targets.step is None else parts)
    if isinstance(targets, (list, tuple)):
        return ",".join(str(t) for t in targets)
    return str(targets)


def _check_name(name: str) -> str:
    if not name.isidentifier():
        raise OptionError(f"--out {name!r}: not a valid Python name")
    return name


def _value(option: str, text: str) -> Any:
    setting = _FLAGS[option][0]
    if setting == "targets":
        return parse_targets(text)
    if setting == "group_outputs":
        if text not in GROUPINGS:
            raise OptionError(f"--group-outputs {text!r}: expected one of {', '.join(GROUPINGS)}")
        return text
    return _check_name(text)


def _read_token(line: str, i: int) -> tuple[str, int]:
    """The whitespace-delimited token at *i* (a bracketed list or a quoted string may hold spaces)."""
    if line[i] in "\"'":
        end = line.find(line[i], i + 1)
        if end < 0:
            raise OptionError(f"unterminated quote in {line[i:]!r}")
        return line[i + 1:end], end + 1
    if line[i] == "[":
        end = line.find("]", i)
        if end < 0:
            raise OptionError(f"unterminated '[' in {line[i:]!r}")
        return line[i:end + 1], end + 1
    m = re.compile(r"\S+").match(line, i)
    assert m is not None
    return m.group(), m.end()


def split_options(line: str, allow_code: bool = True) -> tuple[PxOptions, str]:
    """Parse the options at the start of *line*; return them and the rest (the code).

    With ``allow_code=False`` (``%%px``, ``%pxconfig``, ``%pxresult``) text that is not an option
    is an error.
    """
    opts = PxOptions()
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            return opts, ""
        if not line.startswith("-", i):
            break
        token, after = _read_token(line, i)
        if token == "--":
            i = after
            while i < n and line[i].isspace():
                i += 1
            break
        name, eq, inline_value = token.partition("=")
        if name not in _FLAGS:
            if allow_code and not re.match(r"-{1,2}[A-Za-z]", token):
                break  # code such as `-1` or `-x.y`: no option looks like that
            raise OptionError(f"unknown option {name!r}; options: "
                              "--targets/-t, --block, --noblock, --group-outputs, --stream, --no-stream, "
                              "--local, --out/-o, --verbose/-v (use -- before code that starts with '-')")
        setting, flag_value = _FLAGS[name]
        if flag_value is not None:
            if eq:
                raise OptionError(f"option {name} takes no value")
            value: Any = flag_value
        else:
            if eq:
                text = inline_value
            else:
                j = after
                while j < n and line[j].isspace():
                    j += 1
                if j >= n:
                    raise OptionError(f"option {name} needs a value")
                text, after = _read_token(line, j)
            value = _value(name, text)
        if setting == "local":
            opts.local = value
        elif setting == "out":
            opts.out = value
        else:
            opts.settings[setting] = value
        i = after
    code = line[i:]
    if not allow_code and code.strip():
        raise OptionError(f"unexpected text {code.strip()!r}: only options belong on this line")
    return opts, code


def parse_config(line: str) -> dict[str, Any]:
    """The settings a ``%pxconfig`` line changes (per-run options are refused)."""
    opts, _ = split_options(line, allow_code=False)
    if opts.local or opts.out is not None:
        raise OptionError("--local and --out apply to one run only; give them to %px / %%px")
    return opts.settings
