"""Logging for engine processes: where the log goes, and logging that a peer cannot flood.

An engine's own log is not the user's output: user ``print`` goes to the client (see
:mod:`engines.output`); the log goes to ``--log-file`` or to the process's original stderr (which,
under a supervisor, is a pipe the supervisor relays to its own log).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(name)s[%(process)d] %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def setup_logging(level: str | int = "INFO", log_file: str | None = None,
                  stream: TextIO | None = None) -> logging.Handler:
    """Send the ``engines`` loggers to *log_file* (appending) or to *stream* (default: stderr).

    Replaces handlers installed by an earlier call (a forked engine re-points its log at the pipe
    its supervisor reads).
    """
    logger = logging.getLogger("engines")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler: logging.Handler
    if log_file:
        os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # never world-readable
        handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    logger.propagate = False
    return handler


class LimitedLog:
    """Counts events by kind and logs only a bounded number of lines for each.

    The first :attr:`first` events of a kind are logged; after that, one line every :attr:`every`
    events, carrying the running count.  Used for dropped messages and dispatch-loop errors, so
    an unauthenticated peer (or a broken client) cannot fill a disk through our log.
    """

    def __init__(self, logger: logging.Logger, first: int = 10, every: int = 1000):
        self.logger = logger
        self.first = first
        self.every = every
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        if n <= self.first or n % self.every == 0:
            # bound the line itself too: a message may quote peer-controlled text
            text = message if len(message) <= 200 else message[:200] + "..."
            self.logger.log(level, "%s (%s #%d)", text, kind, n)
