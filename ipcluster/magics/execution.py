"""One ``%px`` run: send the cell, wait (showing output as it streams in), interrupt on Ctrl-C.

Waiting happens in the user's thread, on the AsyncResult or on the run's output queue; both
waits are interruptible, so Ctrl-C (a terminal's SIGINT, a Jupyter kernel interrupt) reaches us
at once.  Then the engines still running this cell get SIGINT, for this cell's requests only
(queued parts are aborted instead), we wait a short while for them to reply, show what they sent
and raise ``KeyboardInterrupt``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import queue
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterator

from ipcluster.magics.options import PxSettings, format_targets
from ipcluster.magics.outputs import DONE, LineStreamer, Output, RunOutputs, show_display, show_outputs

if TYPE_CHECKING:
    from ipcluster.client.asyncresult import AsyncResult

#: Seconds to wait for interrupted engines to reply before giving up on them.
INTERRUPT_GRACE = 5.0


class EnginesInterrupted(KeyboardInterrupt):
    """Ctrl-C while a blocking %px waited: the engines running the cell were interrupted."""

    def _render_traceback_(self) -> list[str]:
        # the local frames only show the magic waiting; the message says what happened
        return [f"KeyboardInterrupt: {self}"]


class PxRun:
    """A cell sent to a view's engines, and everything they sent back."""

    def __init__(self, view: Any, code: str, settings: PxSettings):
        self.view = view
        self.code = code
        self.settings = settings
        self.outputs = RunOutputs(view.client)
        self._ar: AsyncResult | None = None
        # streaming: how many events were shown, whether the last one has arrived
        self._streamed = 0
        self._all_streamed = False
        self._last_display: object = object()
        #: Ctrl-C was pressed while the cell was being sent (see :meth:`submit`)
        self.interrupted_while_sending = False

    @property
    def ar(self) -> "AsyncResult":
        assert self._ar is not None, "submit() first"
        return self._ar

    def submit(self) -> "AsyncResult":
        """Send the cell (never blocking: waiting is :meth:`finish`'s job)."""
        self.outputs.attach()  # before sending: an engine may answer before execute() returns
        # a Ctrl-C while sending must not leave a message half sent, nor some engines without
        # the cell: it is held until everything is sent, then handled like one while waiting
        with _sigint_deferred() as interrupted:
            try:
                ar = self.view.execute(self.code, silent=False, targets=self.settings.targets, block=False)
            except BaseException:
                self.outputs.detach()
                raise
            self.outputs.bind(ar)
            self._ar = ar
        self.interrupted_while_sending = bool(interrupted)
        return ar

    def where(self) -> str:
        """Where the cell went, for ``--verbose``."""
        if hasattr(self.view, "_task_metadata"):
            limit = self.settings.targets if self.settings.targets is not None else self.view.targets
            return "as a load-balanced task" + ("" if limit in (None, "all") else
                                                f" on engines {format_targets(limit)}")
        return "on engine(s) " + ", ".join(str(md.get("engine_id")) for md in self.ar._metadata_list)

    # --- waiting ------------------------------------------------------------------------------

    def finish(self, group_outputs: str, stream: bool) -> None:
        """Wait for the run, show its outputs, and raise its error (or ``KeyboardInterrupt``)."""
        streamer = LineStreamer() if stream else None
        interrupted: list[int] | None = None
        try:
            if self.interrupted_while_sending:
                self.interrupted_while_sending = False
                raise KeyboardInterrupt
            if streamer is not None:
                self._stream(streamer, block=True)
            else:
                concurrent.futures.wait([self.ar])
        except KeyboardInterrupt:
            interrupted = self.interrupt()
        if streamer is not None:
            self._stream(streamer, block=False)  # whatever came after the interrupt
            streamer.finish()
        self.outputs.fill_engines(self.ar)
        show_outputs(self.outputs.events, group_outputs, streamed=stream)
        if interrupted is not None:
            raise EnginesInterrupted("interrupted while waiting for the engines" + (
                f"; sent SIGINT to engine(s) {', '.join(map(str, interrupted))}" if interrupted else ""))
        if self.ar.done():
            exc = self.ar.exception()
            if exc is not None:
                raise exc

    def _stream(self, streamer: LineStreamer, block: bool) -> None:
        """Show text and rich output as it arrives, until the run is done (or, with
        ``block=False``, until nothing more is queued).

        The queue only wakes us up; what to show is read from the run's event list by position,
        so a Ctrl-C landing just after a wake-up loses nothing (it is shown after the interrupt).
        """
        while True:
            self._show_new(streamer)
            if self._all_streamed:
                return
            try:
                token: Output = self.outputs.queue.get(block=block)
            except queue.Empty:
                return
            if token is DONE:
                self._all_streamed = True

    def _show_new(self, streamer: LineStreamer) -> None:
        events = self.outputs.events
        while self._streamed < len(events):
            out = events[self._streamed]
            if out.kind in ("stdout", "stderr"):
                streamer.feed(out)
            elif out.kind == "display":
                streamer.finish()  # text printed before the figure stays above it
                show_display(out.engine, out.content, labelled=out.engine != self._last_display)
                self._last_display = out.engine
            self._streamed += 1

    # --- Ctrl-C -------------------------------------------------------------------------------

    def interrupt(self) -> list[int]:
        """Stop the parts of this run still pending: abort the queued ones, SIGINT the engines
        running one, then wait up to :data:`INTERRUPT_GRACE` s for their replies.  Returns the
        engines signalled.  Another Ctrl-C meanwhile only cuts the wait short."""
        ar = self.ar
        pending = [m for m, c in zip(ar.msg_ids, ar._children) if not c.done()]
        if not pending:
            return []
        client = self.view.client
        with _sigint_deferred() as again:  # a Ctrl-C must not cut a message in half
            engines = self._running_engines(pending)
            try:
                client.abort(pending, block=True)
            except Exception as e:  # best effort: the signal below is what stops running code
                print(f"[px] could not abort queued parts: {e}", file=sys.stderr)
            if engines:
                print(f"[px] interrupting engine(s) {', '.join(map(str, engines))}", file=sys.stderr)
                # for this run's parts only: one that has ended (aborted, failed) by the time the
                # signal arrives must not cost the engine's next request an interrupt
                client.send_signal(signal.SIGINT, targets=engines, block=False, msg_ids=pending)
        done: Any = set()
        if not again:
            try:
                done, _ = concurrent.futures.wait([ar], timeout=INTERRUPT_GRACE)
            except KeyboardInterrupt:  # another Ctrl-C: stop waiting
                pass
        if not done:
            print(f"[px] the engines did not reply within {INTERRUPT_GRACE:g} s; "
                  "%pxresult shows their output once they do", file=sys.stderr)
        return engines

    def _running_engines(self, pending: list[str]) -> list[int]:
        """Engines on which a pending part of this run is (most likely) the request running now."""
        client = self.view.client
        tracker = client._tracker
        engines: set[int] = set()
        tasks: list[str] = []
        for m in pending:
            md = tracker.metadata.get(m)
            if md is None:
                continue
            if md.get("engine_id") is None:
                tasks.append(m)  # placed by the scheduler: the controller knows where
                continue
            uuid = str(md.get("engine_uuid") or "").encode("ascii")
            submitted = md.get("submitted") or math.inf
            earlier = [o for o in tracker.outstanding_on(uuid) if o != m and
                       ((tracker.metadata.get(o) or {}).get("submitted") or math.inf) < submitted]
            if not earlier:  # nothing of ours queued before it there: it is what runs
                engines.add(int(md["engine_id"]))
        if tasks:
            try:
                records = client.db_query({"msg_id": {"$in": tasks}}, keys=["engine_id"])
            except Exception:
                records = []
            engines.update(int(r["engine_id"]) for r in records if r.get("engine_id") is not None)
        return sorted(engines)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[list[int]]:
    """Record SIGINTs instead of raising ``KeyboardInterrupt`` (main thread only; elsewhere
    Python delivers no signals anyway); yields the list they are recorded in."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, previous)
