"""``python -P -m engines`` / ``ipcluster-engine``: start one engine, or a supervisor of N.

Run with ``-P`` (or as the console script) so a ``controller.py`` or ``engines.py`` in the user's
working directory cannot shadow our packages; the working directory is put on ``sys.path`` only
after the engine's own imports, so the user's modules there are importable by tasks.

Exit codes: 0 clean shutdown; 1 failure (no connection file, no registration reply, an engine of
a supervisor failed); 2 bad arguments; 3 registration rejected by the controller.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

CONNECTION_FILE_TIMEOUT = 30.0
CONNECTION_FILE_POLL = 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ipcluster-engine", description="Start ipcluster engine(s).")
    p.add_argument("--file", "-f", required=True, metavar="CONNECTION_FILE",
                   help="the controller's connection file (waited for if it does not exist yet)")
    p.add_argument("-n", type=int, default=None, metavar="N",
                   help="fork N engines under a supervisor process (default: one engine, no supervisor)")
    p.add_argument("--log-file", default=None, help="append the log here instead of stderr")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], type=str.upper)
    p.add_argument("--work-dir", default=None, help="working directory of the engines (default: current)")
    args = p.parse_args(argv)
    if args.n is not None and args.n < 1:
        p.error("-n must be at least 1")
    return args


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
    work_dir = os.path.abspath(args.work_dir) if args.work_dir else os.getcwd()

    from ipcluster.errors import ConnectionFileError
    from ipcluster.protocol.connection import read_connection_file

    from engines.logs import setup_logging

    handler = setup_logging(args.log_level, log_file)
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

        sys.path.insert(0, work_dir)
        return run_engine(info)

    from engines.supervisor import Supervisor

    sys.path.insert(0, work_dir)
    stream = getattr(handler, "stream", None) or sys.stderr
    return Supervisor(info, args.n, log_stream=stream, log_level=args.log_level).run()


if __name__ == "__main__":
    sys.exit(main())
