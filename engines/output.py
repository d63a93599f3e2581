"""Output capture: ``sys.stdout``/``sys.stderr`` become streams that send ``stream`` messages.

Output belongs to a request: every output message goes to the client that sent the request
currently running (same route as its reply, parent = its header), so the controller can forward it
in order and a client that has the reply has all the output.

Rules, in order of importance:

* Only the main thread sends (zmq sockets are single-thread).  Other threads' writes are buffered
  and sent by the main thread: at the next write on the main thread, before the next reply, or
  from the main loop's idle wake-up, with the last request as parent.
* Everything buffered is flushed before a reply (:meth:`OutputRouter.flush`) and before any other
  output message (:meth:`OutputRouter.publish`), so the order the user saw is the order on the wire.
* While a request runs, text is batched: a stream is flushed when its buffer passes
  :data:`FLUSH_BYTES`, or at a line end once :data:`FLUSH_INTERVAL` has passed since its last flush
  in this request (checked on write).  So a request's first line, and a line printed after a quiet
  spell, go out at once (``print("working..."); long_computation()`` shows up while it runs), and
  waiting for the line end keeps ``print(x)`` (two writes: the text, then ``"\n"``) in one message.
  A write to one stream first flushes the other one, so stdout/stderr interleave as written.
"""

from __future__ import annotations

import io
import math
import logging
import threading
import time
from typing import Any, Callable, TextIO

#: A stream's buffer is sent once it holds this many characters.
FLUSH_BYTES = 8192
#: ... or once this many seconds have passed since its last flush.
FLUSH_INTERVAL = 0.05

#: ``send(msg_type, content, parent_header, idents)``: put one message on the wire.
SendFn = Callable[[str, dict[str, Any], dict[str, Any], list[bytes]], None]

log = logging.getLogger("engines.output")


class OutputStream(io.TextIOBase):
    """A text stream that buffers writes and hands them to an :class:`OutputRouter`.

    Thread-safe for writing; only the router's main thread ever sends.
    """

    def __init__(self, name: str, router: "OutputRouter"):
        super().__init__()
        self.name = name
        self._router = router
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._size = 0
        self.last_flush = -math.inf  # never flushed: the first line goes out at once

    # --- io.TextIOBase ------------------------------------------------------------------------

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "strict"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation(f"{self.name} is captured by the engine and has no file descriptor")

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return 0
        on_main = self._router.on_main_thread()
        if on_main:
            self._router.flush_others(self)
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            size = self._size
        if on_main and (size >= FLUSH_BYTES or
                        ("\n" in text and self._router.clock() - self.last_flush >= FLUSH_INTERVAL)):
            self.flush()
        return len(text)

    def flush(self) -> None:
        """Send what is buffered (main thread only; elsewhere a no-op, the main thread will send)."""
        if self._router.on_main_thread():
            self._router.send_stream(self)

    # --- for the router -----------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return self._size > 0

    def take(self) -> str:
        """Remove and return everything buffered."""
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
            self._size = 0
        self.last_flush = self._router.clock()
        return text


class OutputRouter:
    """Sends a request's output to the client that made it.

    Parameters
    ----------
    send:
        Puts one message on the wire (the mux socket); called on the main thread only.
    fallback:
        Where text goes when no request has been seen yet (no client to send it to): the engine's
        own log stream.
    clock:
        Monotonic time source, injectable for tests.
    """

    def __init__(self, send: SendFn, fallback: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._send = send
        self._fallback = fallback
        self.clock = clock
        self._main_ident = threading.get_ident()
        self.parent: dict[str, Any] = {}
        self.idents: list[bytes] = []
        self.sent = 0  # output messages sent for the current parent (see set_parent)
        self.stdout = OutputStream("stdout", self)
        self.stderr = OutputStream("stderr", self)
        self._streams = (self.stdout, self.stderr)
        self._saved: tuple[Any, Any] | None = None

    def on_main_thread(self) -> bool:
        return threading.get_ident() == self._main_ident

    def set_parent(self, parent: dict[str, Any], idents: list[bytes]) -> None:
        """Route output to this request from now on (flushing what belonged to the previous one)."""
        out, err = self._streams
        if out._size > 0 or err._size > 0:
            self.flush()
        self.parent = parent
        self.idents = list(idents)
        self.sent = 0  # output messages sent for this parent so far
        out.last_flush = err.last_flush = -math.inf  # a request's first line goes out at once

    def publish(self, msg_type: str, content: dict[str, Any]) -> None:
        """Send a non-stream output message (display_data, execute_result, error) in order."""
        if not self.on_main_thread():
            log.warning("%s from a background thread dropped (only the main thread may send)", msg_type)
            return
        self.flush()
        if self.parent:
            self._safe_send(msg_type, content)

    def flush(self) -> None:
        """Send everything buffered in both streams (main thread only)."""
        out, err = self._streams  # (runs several times per request: no loop, no property)
        if out._size > 0:
            self.send_stream(out)
        if err._size > 0:
            self.send_stream(err)

    def flush_others(self, stream: OutputStream) -> None:
        for s in self._streams:
            if s is not stream and s.pending:
                self.send_stream(s)

    def send_stream(self, stream: OutputStream) -> None:
        text = stream.take()
        if not text:
            return
        if not self.parent:
            if self._fallback is not None:
                try:
                    self._fallback.write(text)
                    self._fallback.flush()
                except (OSError, ValueError):
                    pass
            return
        self._safe_send("stream", {"name": stream.name, "text": text})

    def _safe_send(self, msg_type: str, content: dict[str, Any]) -> None:
        # called from inside user code (print): a failure to send must not become the user's error
        try:
            self.sent += 1
            self._send(msg_type, content, self.parent, self.idents)
        except Exception as e:
            log.error("could not send %s message: %s: %s", msg_type, type(e).__name__, e)

    # --- sys.stdout / sys.stderr --------------------------------------------------------------

    def install(self) -> None:
        """Replace ``sys.stdout``/``sys.stderr`` with the capturing streams."""
        import sys

        if self._saved is None:
            self._saved = (sys.stdout, sys.stderr)
        sys.stdout = self.stdout  # type: ignore[assignment]
        sys.stderr = self.stderr  # type: ignore[assignment]

    def uninstall(self) -> None:
        """Put the original streams back (after a last flush)."""
        import sys

        if self.on_main_thread():
            self.flush()
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        # whoever still holds the streams (IPython restores its saved copies at exit) writes to
        # the fallback from now on, not to a closed socket
        self.parent = {}
        self.idents = []
