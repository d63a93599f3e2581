"""``python -P -m engines`` / ``ipcluster-engine``: start one engine, or a supervisor of N.

Run with ``-P`` (or as the console script) so a ``controller.py`` or ``engines.py`` in the user's
working directory cannot shadow our packages; the working directory is put on ``sys.path`` only
after the engine's own imports, so the user's modules there are importable by tasks.

Configuration: ``<profile_dir>/ipengine_config.py`` (``c.IPEngine.startup_command = ...``, see
:mod:`engines.config`) is loaded when it exists, the command line winning.  The profile directory
is ``--profile-dir``, or else the connection file's when that file is in ``<profile_dir>/security/``
(where ``Cluster`` puts it).  The file is loaded before anything else happens (by the supervisor,
with ``-n``), so a broken one ends the process at once with a message naming it.

Exit codes: 0 clean shutdown; 1 failure (no connection file, no registration reply, an engine of
a supervisor failed); 2 bad arguments or a broken ``ipengine_config.py``; 3 registration rejected
by the controller; 4 the controller is gone (unreachable for ``--controller-timeout`` seconds; a
supervisor exits 4 once its engines have all stopped so).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ipcluster.schedpolicy import use_batch_scheduling
from engines.controller_watch import CONTROLLER_TIMEOUT, REGISTRATION_TIMEOUT

if TYPE_CHECKING:  # pragma: no cover
    from engines.execution import StartupCode

CONNECTION_FILE_TIMEOUT = 30.0
CONNECTION_FILE_POLL = 0.01
#: The engines' config file in a profile directory (read by :mod:`engines.config`).
CONFIG_FILE_NAME = "ipengine_config.py"
DEFAULT_LOG_LEVEL = "INFO"
EXIT_BAD_CONFIG = 2

log = logging.getLogger("engines.main")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ipcluster-engine", description="Start ipcluster engine(s).")
    p.add_argument("--file", "-f", required=True, metavar="CONNECTION_FILE",
                   help="the controller's connection file (waited for if it does not exist yet)")
    p.add_argument("-n", type=int, default=None, metavar="N",
                   help="fork N engines under a supervisor process (default: one engine, no supervisor)")
    p.add_argument("--log-file", default=None, help="append the log here instead of stderr")
    p.add_argument("--profile-dir", default=None, metavar="DIR",
                   help=f"profile directory whose {CONFIG_FILE_NAME} is loaded (default: the connection "
                   "file's, when it is in <profile_dir>/security/)")
    # None: not given, so that the config file's value (or the default) applies
    p.add_argument("--log-level", default=None,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], type=str.upper,
                   help=f"log level (default: c.IPEngine.log_level, else {DEFAULT_LOG_LEVEL})")
    p.add_argument("--work-dir", default=None,
                   help="working directory of the engines (default: c.IPEngine.work_dir, else current)")
    p.add_argument("--controller-timeout", type=float, default=None, metavar="SECONDS",
                   help="exit (code 4) when the controller has been unreachable this long; 0: never "
                   f"(default: c.IPEngine.controller_timeout, else {CONTROLLER_TIMEOUT:g})")
    p.add_argument("--registration-timeout", type=float, default=None, metavar="SECONDS",
                   help="exit (code 1) when the controller has not answered the registration this long "
                   f"(default: c.IPEngine.registration_timeout, else {REGISTRATION_TIMEOUT:g})")
    p.add_argument("--mpi", action="store_true",
                   help="run as one rank of an mpiexec: initialise MPI (mpi4py) and put mpi_rank and "
                   "mpi_size in the namespace (one engine per process, so not with -n)")
    p.add_argument("--restart-engines", action="store_true",
                   help="with -n: start a new engine (same id, startup code run again) in place of one that dies")
    p.add_argument("--interrupt-grace", type=float, default=None, metavar="SECONDS",
                   help="with -n: seconds between interrupting a request past its time limit (or cancelled) "
                   "and killing its engine (default 2)")
    args = p.parse_args(argv)
    if args.interrupt_grace is not None and args.interrupt_grace < 0:
        p.error("--interrupt-grace must be >= 0")
    if args.n is not None and args.n < 1:
        p.error("-n must be at least 1")
    if args.mpi and args.n is not None:
        p.error("--mpi runs one engine per MPI rank: use mpiexec -n N, not -n")
    return args


@dataclass
class EngineSettings:
    """What the command line and ``ipengine_config.py`` decided, as plain values."""

    log_level: str = DEFAULT_LOG_LEVEL
    work_dir: str = ""  # "": the current directory
    startup: "StartupCode | None" = None
    config_file: str | None = None  # the file loaded, if any
    controller_timeout: float = CONTROLLER_TIMEOUT
    registration_timeout: float = REGISTRATION_TIMEOUT


def profile_dir_for(connection_file: str, profile_dir: str | None = None) -> str | None:
    """The profile directory: *profile_dir* if given, else the connection file's, else None.

    A connection file in ``<profile_dir>/security/`` belongs to that profile (its grandparent).
    """
    if profile_dir:
        return os.path.abspath(os.path.expanduser(profile_dir))
    parent = Path(os.path.abspath(connection_file)).parent
    return str(parent.parent) if parent.name == "security" else None


def resolve_settings(args: argparse.Namespace) -> EngineSettings:
    """The engine's settings: command line over ``ipengine_config.py`` over defaults.

    Raises :class:`engines.config.EngineConfigError` if the config file is broken.
    """
    pdir = profile_dir_for(args.file, args.profile_dir)
    path = os.path.join(pdir, CONFIG_FILE_NAME) if pdir else None
    if path is None or not os.path.isfile(path):
        timeout = CONTROLLER_TIMEOUT if args.controller_timeout is None else args.controller_timeout
        reg = REGISTRATION_TIMEOUT if args.registration_timeout is None else args.registration_timeout
        return EngineSettings(log_level=args.log_level or DEFAULT_LOG_LEVEL, work_dir=args.work_dir or "",
                              controller_timeout=timeout, registration_timeout=reg)
    # imported only now: it imports traitlets, which an engine without a config file does without
    from engines.config import load_engine_config
    from engines.execution import StartupCode

    cli = {"log_level": args.log_level, "work_dir": args.work_dir,
           "controller_timeout": args.controller_timeout, "registration_timeout": args.registration_timeout}
    ipengine = load_engine_config(path, {k: v for k, v in cli.items() if v is not None})
    return EngineSettings(log_level=ipengine.log_level, work_dir=ipengine.work_dir,
                          startup=StartupCode(ipengine.startup_command, ipengine.startup_script),
                          config_file=path, controller_timeout=ipengine.controller_timeout,
                          registration_timeout=ipengine.registration_timeout)


def wait_for_file(path: str, timeout: float = CONNECTION_FILE_TIMEOUT,
                  interval: float = CONNECTION_FILE_POLL) -> bool:
    """Wait until *path* exists (the controller may still be starting); False after *timeout*."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (``sys.exit(main())``)."""
    args = parse_args(argv)
    path = os.path.abspath(args.file)
    log_file = os.path.abspath(args.log_file) if args.log_file else None

    from ipcluster.errors import ConnectionFileError, IPClusterError
    from ipcluster.protocol.connection import read_connection_file

    from engines.logs import setup_logging

    handler = setup_logging(args.log_level or DEFAULT_LOG_LEVEL, log_file)
    try:
        settings = resolve_settings(args)
    except IPClusterError as e:  # EngineConfigError: its message names the file
        print(f"ipcluster-engine: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_CONFIG
    logging.getLogger("engines").setLevel(settings.log_level)
    if settings.config_file:
        log.info("loaded %s", settings.config_file)
    work_dir = os.path.abspath(os.path.expanduser(settings.work_dir)) if settings.work_dir else os.getcwd()
    if not wait_for_file(path):
        print(f"ipcluster-engine: connection file {path} did not appear within "
              f"{CONNECTION_FILE_TIMEOUT:g} s; is the controller starting?", file=sys.stderr)
        return 1
    try:
        info = read_connection_file(path)
        os.chdir(work_dir)
    except (ConnectionFileError, OSError) as e:
        print(f"ipcluster-engine: {e}", file=sys.stderr)
        return 1

    if args.n is None:
        from engines.engine import run_engine

        seed_ns = None
        if args.mpi:
            from engines.mpi import MPIUnavailable, mpi_namespace

            try:
                seed_ns = mpi_namespace()
            except MPIUnavailable as e:
                print(f"ipcluster-engine: {e}", file=sys.stderr, flush=True)
                return 1
        sys.path.insert(0, work_dir)
        return run_engine(info, startup=settings.startup, controller_timeout=settings.controller_timeout,
                          seed_ns=seed_ns, registration_timeout=settings.registration_timeout)

    from engines.supervisor import INTERRUPT_GRACE, Supervisor

    sys.path.insert(0, work_dir)
    stream = getattr(handler, "stream", None) or sys.stderr
    grace = INTERRUPT_GRACE if args.interrupt_grace is None else args.interrupt_grace
    return Supervisor(info, args.n, log_stream=stream, log_level=settings.log_level,
                      startup=settings.startup, controller_timeout=settings.controller_timeout,
                      registration_timeout=settings.registration_timeout,
                      restart_engines=args.restart_engines, interrupt_grace=grace).run()


def run() -> int:
    """The process's entry point: batch scheduling (see :mod:`ipcluster.schedpolicy`) before any
    thread or fork, so engines and their threads inherit it; then :func:`main`.  (``main`` alone
    leaves the calling process's policy: tests call it in-process.)"""
    use_batch_scheduling()
    return main()


if __name__ == "__main__":
    sys.exit(run())
