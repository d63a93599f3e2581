"""The magics themselves: ``%px``, ``%%px``, ``%autopx``, ``%pxresult``, ``%pxconfig``.

One :class:`ParallelMagics` object per suffix and shell holds a view and its settings; its bound
methods are registered as ``%px<suffix>`` etc., so ``rc[::2].activate("_even")`` gives
``%px_even`` next to a plain ``%px``.  ``%autopx`` adds an input transformer that turns every
following cell into a ``%%px`` cell until ``%autopx`` comes again; IPython's terminal and the
Jupyter kernel both run cells through that transformer, so the mode works in both.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from ipcluster.errors import NoEnginesRegistered
from ipcluster.magics.execution import PxRun
from ipcluster.magics.options import OptionError, PxSettings, parse_config, split_options

_OPTIONS_HELP = """
Options
-------
--targets T, -t T   engines to run on: all, an id (3), a list (0,2) or a slice (::2)
--block / --noblock  wait for the engines and show their output (default), or return at once
                    (%pxresult shows the output later)
--group-outputs G   how finished output is ordered: type (all stdout, then stderr, then rich
                    output and values), engine (everything of one engine together) or order
                    (like type, with the n-th figure of every engine side by side)
--stream / --no-stream  show stdout/stderr (and rich output) as it arrives while waiting
                    (default), or all at the end, grouped
--local             also run the code here, in the local namespace
--out NAME, -o NAME  store the AsyncResult as NAME in the local namespace
--verbose, -v       say where the code went
--                  ends the options (for %px code that starts with '-')
"""


class ParallelMagics:
    """The magics of one view under one suffix in one shell."""

    def __init__(self, shell: InteractiveShell, suffix: str = "", view: Any = None, explicit: bool = False):
        self.shell = shell
        self.suffix = suffix
        self.view = view
        #: activated by the user (view.activate / rc.activate), not by a Client being created
        self.explicit = explicit
        self.settings = PxSettings()
        self.last_run: PxRun | None = None
        self._autopx: Any = None  # the installed input transformer while %autopx is on

    # --- registration -------------------------------------------------------------------------

    def register(self) -> None:
        """Register ``%px<suffix>`` / ``%%px<suffix>`` and the others in the shell."""
        s = self.suffix
        register: Any = self.shell.register_magic_function  # (its IPython decorator confuses mypy)
        register(self.px, "line_cell", "px" + s)
        register(self.autopx, "line", "autopx" + s)
        register(self.pxresult, "line", "pxresult" + s)
        register(self.pxconfig, "line", "pxconfig" + s)

    def _view(self) -> Any:
        view = self.view
        if view is None:
            raise UsageError(f"%px{self.suffix} has no view to run on: create an ipcluster.Client() "
                             "(it activates the magics) or call view.activate()")
        if getattr(view.client, "_closed", False):
            raise UsageError(f"the Client of %px{self.suffix}'s view is closed: create a new Client "
                             "or activate another view")
        return view

    # --- %px / %%px ---------------------------------------------------------------------------

    def px(self, line: str = "", cell: str | None = None) -> None:
        """Run code on the active view's engines.

        ``%px [options] CODE`` runs one line; ``%%px [options]`` runs the cell.  The engines run
        it as IPython code (magics too: ``%px %timeit f()``); their stdout, stderr, rich output
        and values are shown as ``[stdout:0]``, ``[stderr:1]``, ``[output:0]`` and ``Out[0:5]``.
        A failure raises the engine's error (one engine) or a CompositeError holding every
        engine's traceback.  Ctrl-C while waiting interrupts the engines running the cell.
        """
        try:
            opts, code = split_options(line, allow_code=cell is None)
        except OptionError as e:
            raise UsageError(str(e)) from None
        if cell is not None:
            code = cell
        if not code.strip():
            raise UsageError(f"nothing to run: %px{self.suffix} CODE, or a %%px{self.suffix} cell")
        settings = opts.resolve(self.settings)
        view = self._view()
        run = PxRun(view, code, settings)
        try:
            ar = run.submit()
        except (TypeError, ValueError, IndexError, NoEnginesRegistered) as e:  # bad targets for this view
            raise UsageError(f"%px{self.suffix}: {e}") from None
        if opts.out is not None:
            self.shell.user_ns[opts.out] = ar
        if settings.verbose:
            print(f"[px] running {run.where()}" + ("" if settings.block else f"; %pxresult{self.suffix} "
                                                      "shows the output"))
        if opts.local and not run.interrupted_while_sending:
            self.shell.run_cell(code, store_history=False)
        if not settings.block:
            self.last_run = run
            if run.interrupted_while_sending:  # Ctrl-C as a non-blocking run was sent
                run.finish(settings.group_outputs, stream=False)
            return
        run.finish(settings.group_outputs, settings.stream)

    # --- %pxresult ----------------------------------------------------------------------------

    def pxresult(self, line: str = "") -> None:
        """Show the outputs of the last non-blocking %px run (waiting for it if needed).

        Takes ``--group-outputs``; raises the run's error like a blocking %px.
        """
        try:
            opts, _ = split_options(line, allow_code=False)
        except OptionError as e:
            raise UsageError(str(e)) from None
        others = sorted(set(opts.settings) - {"group_outputs"}) + (["local"] if opts.local else []) + (
            ["out"] if opts.out is not None else [])
        if others:
            raise UsageError(f"%pxresult{self.suffix} takes only --group-outputs, not "
                             f"{', '.join('--' + o.replace('_', '-') for o in others)}")
        if self.last_run is None:
            raise UsageError(f"no non-blocking %px{self.suffix} run to show (run %px{self.suffix} --noblock "
                             "first)")
        settings = opts.resolve(self.settings)
        self.last_run.finish(settings.group_outputs, stream=False)

    # --- %pxconfig ----------------------------------------------------------------------------

    def pxconfig(self, line: str = "") -> None:
        """Change the defaults of %px, %%px and %autopx: ``--targets``, ``--block`` / ``--noblock``,
        ``--group-outputs``, ``--stream`` / ``--no-stream``, ``--verbose`` / ``--no-verbose``.

        ``%pxconfig`` alone prints the current settings.
        """
        try:
            changes = parse_config(line)
        except OptionError as e:
            raise UsageError(str(e)) from None
        if not changes:
            print(self.settings.describe())
            return
        if "targets" in changes and self.view is not None and changes["targets"] != "all":
            try:
                self.view.client._resolve_targets(changes["targets"])
            except Exception as e:  # refuse engines that do not exist now, like %px would
                raise UsageError(f"%pxconfig{self.suffix} --targets: {e}") from None
        for k, v in changes.items():
            setattr(self.settings, k, v)

    # --- %autopx ------------------------------------------------------------------------------

    def autopx(self, line: str = "") -> None:
        """Toggle a mode in which every cell runs on the engines (as %%px), until %autopx again."""
        if line.strip():
            raise UsageError(f"%autopx{self.suffix} takes no arguments (use %pxconfig{self.suffix} to "
                             "change how cells run)")
        transforms = self.shell.input_transformers_cleanup
        if self._autopx is not None:
            if self._autopx in transforms:
                transforms.remove(self._autopx)
            self._autopx = None
            print(f"%autopx{self.suffix} disabled")
            return
        self._view()  # fail now, not on the next cell
        self._autopx = _autopx_transformer("px" + self.suffix, "autopx" + self.suffix)
        transforms.append(self._autopx)
        print(f"%autopx{self.suffix} enabled")

    @property
    def autopx_enabled(self) -> bool:
        return self._autopx is not None


def _autopx_transformer(px_name: str, toggle: str) -> Any:
    """A cleanup input transformer that runs every cell but the toggle itself as ``%%px``."""

    def transform(lines: list[str]) -> list[str]:
        cell = "".join(lines)
        stripped = cell.strip()
        if not stripped or stripped == f"%{toggle}":
            return lines
        return [f"get_ipython().run_cell_magic({px_name!r}, '', {cell!r})\n"]

    # IPython's completeness check (the terminal's "is this cell finished?") must see the
    # user's code, not the call that wraps it: it skips transformers with side effects
    transform.has_side_effects = True  # type: ignore[attr-defined]
    return transform


ParallelMagics.px.__doc__ = (ParallelMagics.px.__doc__ or "") + _OPTIONS_HELP
