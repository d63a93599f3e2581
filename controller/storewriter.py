"""The task store's writer thread: SQLite's own work off the controller's loop.

The loop builds the rows of a flush (a snapshot of each dirty record, taken where the records
change) and hands them over; this thread runs the transaction.  ``sqlite3`` releases the GIL while
SQLite steps a statement and commits, so the B-tree and WAL work of a flush overlaps the loop's
message handling instead of stalling it (measured on the 10,000-task load-balanced loop: the loop
was blocked in flushes for about 12 % of its time).

One write is in flight at most.  While it runs, the loop's later changes stay dirty in the store
and go with the next hand-over, so a busy writer means fewer, larger transactions, never a queue
that grows.  Writes are applied in hand-over order (one thread), so a row deleted after it was
written is deleted after the write.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, Callable, Sequence

#: One transaction: ``(sql, rows)`` statements run with ``executemany`` in order, then COMMIT.
Write = Sequence[tuple[str, Sequence[Sequence[Any]]]]


class StoreWriter:
    """Runs :data:`Write` transactions on *db* in a thread of its own, one at a time."""

    def __init__(self, db: sqlite3.Connection, name: str = "ipcluster-store-writer",
                 on_written: Callable[[int], None] | None = None):
        self.db = db
        self.name = name
        self.on_written = on_written  # called (in this thread) with the rows of each committed write
        self._cond = threading.Condition()
        self._pending: tuple[Write, int] | None = None  # handed over, not started yet
        self._busy = False  # a write is handed over or running
        self._error: BaseException | None = None  # the last failed write's error, until taken
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._busy

    def submit(self, write: Write, rows: int) -> bool:
        """Hand *write* over; ``False`` (nothing done) while the previous one is unfinished."""
        with self._cond:
            if self._busy or self._stop:
                return False
            self._pending, self._busy = (write, rows), True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Until no write is in flight; ``False`` if *timeout* passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy, timeout)

    def take_error(self) -> BaseException | None:
        """The error of the last failed write (once), or None."""
        with self._cond:
            err, self._error = self._error, None
        return err

    def stop(self, timeout: float | None = None) -> None:
        """Finish the write in flight (if any), then end the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stop)
                if self._pending is None:
                    return
                (write, rows), self._pending = self._pending, None
            err: BaseException | None = None
            try:
                self._apply(write)
            except BaseException as e:  # kept for the loop to report; the thread goes on
                err = e
            if err is None and self.on_written is not None:
                self.on_written(rows)
            with self._cond:
                if err is not None:
                    self._error = err
                self._busy = False
                self._cond.notify_all()

    def _apply(self, write: Write) -> None:
        db = self.db
        db.execute("BEGIN")
        try:
            for sql, rows in write:
                db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
