"""The outputs of one ``%px`` run: collected as they arrive, shown the way IPython users know.

:class:`RunOutputs` listens to the client's output messages (a tracker hook on the client's IO
thread) and keeps the ones of its own requests, in arrival order, each tagged with its engine.
The engine of a load-balanced task is known only once something arrives from it: it is read from
the message's routing identity.  Because an engine sends a request's outputs before its reply on
the same route, the run has every output once the AsyncResult is done; ``done`` marks that point
in the queue a streaming reader consumes.

Showing: ``[stdout:0] ...`` / ``[stderr:1] ...`` for text, ``[output:0]`` above an engine's rich
output (``display()``, figures), ``Out[0:5]: ...`` for a cell's value.  Rich data is passed to
IPython's ``display`` raw, so a notebook renders HTML and images and a terminal prints the text.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from ipcluster.protocol.session import Message

if TYPE_CHECKING:
    from ipcluster.client.asyncresult import AsyncResult
    from ipcluster.client.client import Client


class Output(NamedTuple):
    """One output of one engine: ``kind`` is stdout, stderr, display, result or error."""

    engine: int | None
    kind: str
    content: dict[str, Any]


_KINDS = {"display_data": "display", "execute_result": "result", "error": "error"}

#: put in the queue after the last output of a run
DONE = Output(None, "done", {})


class RunOutputs:
    """Every output of one run's requests, in arrival order (see the module docstring).

    Create it, :meth:`attach` it to the client *before* sending (so nothing is missed), then
    :meth:`bind` the AsyncResult once the requests are sent.
    """

    def __init__(self, client: "Client"):
        self._client = client
        self._lock = threading.Lock()
        self._engine_of: dict[str, int | None] | None = None  # msg_id -> engine; None until bound
        self._early: list[Message] = []  # outputs that arrived before bind()
        self.events: list[Output] = []
        self.queue: "queue.SimpleQueue[Output]" = queue.SimpleQueue()
        self._attached = False

    def attach(self) -> None:
        self._client._tracker.add_output_hook(self._on_output)
        self._attached = True

    def detach(self) -> None:
        if self._attached:
            self._client._tracker.remove_output_hook(self._on_output)
            self._attached = False

    def bind(self, ar: "AsyncResult") -> None:
        """Keep the outputs of *ar*'s requests; stop listening when it is done."""
        engines = {m: md.get("engine_id") for m, md in zip(ar.msg_ids, ar._metadata_list)}
        with self._lock:
            self._engine_of = engines
            early, self._early = self._early, []
            for msg in early:
                self._keep(msg)
        ar.add_done_callback(self._finished)

    def _finished(self, _: Any) -> None:
        self.detach()
        self.queue.put(DONE)

    def _on_output(self, msg: Message) -> None:  # the IO thread
        with self._lock:
            if self._engine_of is None:
                self._early.append(msg)
            else:
                self._keep(msg)

    def _keep(self, msg: Message) -> None:
        """Record *msg* if it belongs to this run (caller holds the lock)."""
        assert self._engine_of is not None
        msg_id = msg.parent_id
        if msg_id not in self._engine_of:
            return
        engine = self._engine_of[msg_id]
        if engine is None:
            engine = self._engine_from_route(msg)
            self._engine_of[msg_id] = engine
        content = msg.content
        if msg.msg_type == "stream":
            kind = "stderr" if content.get("name") == "stderr" else "stdout"
        else:
            kind = _KINDS.get(msg.msg_type, "")
            if not kind:
                return
        out = Output(engine, kind, content)
        self.events.append(out)
        self.queue.put(out)

    def _engine_from_route(self, msg: Message) -> int | None:
        """The id of the engine a message came from, by its routing identity (load-balanced tasks)."""
        if not msg.idents:
            return None
        uuid = msg.idents[-1]
        for eid, u in list(self._client._engines.items()):
            if u == uuid:
                return eid
        return None

    def fill_engines(self, ar: "AsyncResult") -> None:
        """Once *ar* is done, name the engine of outputs that arrived without one."""
        if len(ar.msg_ids) == 1:  # a single request: every output is its engine's
            eid = ar._metadata_list[0].get("engine_id")
            self.events = [o._replace(engine=eid) if o.engine is None else o for o in self.events]


# --- showing ---------------------------------------------------------------------------------


def _display() -> Callable[..., Any]:
    from IPython.display import display

    return display


def _label(engine: int | None) -> str:
    return "?" if engine is None else str(engine)


def show_text(kind: str, engine: int | None, text: str) -> None:
    """One engine's stdout or stderr as a block: ``[stdout:0] text`` (a long text below the label)."""
    if not text:
        return
    stream = sys.stderr if kind == "stderr" else sys.stdout
    label = f"[{kind}:{_label(engine)}]"
    body = text if text.endswith("\n") else text + "\n"
    if body.count("\n") > 1:
        stream.write(f"{label} \n{body}")
    else:
        stream.write(f"{label} {body}")
    stream.flush()


def show_display(engine: int | None, content: dict[str, Any], labelled: bool = True) -> None:
    """Rich output (``display_data``) from an engine, under an ``[output:N]`` label."""
    if labelled:
        sys.stdout.write(f"[output:{_label(engine)}]\n")
        sys.stdout.flush()
    data = content.get("data") or {}
    if data:
        _display()(data, raw=True, metadata=content.get("metadata") or {})


def show_result(engine: int | None, content: dict[str, Any]) -> None:
    """A cell's value: ``Out[engine:count]: value``; rich values are displayed below the label."""
    data = dict(content.get("data") or {})
    prompt = f"Out[{_label(engine)}:{content.get('execution_count', '?')}]:"
    text = str(data.get("text/plain", ""))
    if any(k != "text/plain" for k in data):
        sys.stdout.write(prompt + "\n")
        sys.stdout.flush()
        _display()(data, raw=True, metadata=content.get("metadata") or {})
        return
    data["text/plain"] = f"{prompt} \n{text}" if "\n" in text else f"{prompt} {text}"
    _display()(data, raw=True, metadata=content.get("metadata") or {})


def _engines(events: list[Output]) -> list[int | None]:
    seen = dict.fromkeys(o.engine for o in events)
    return sorted(seen, key=lambda e: (e is None, e if e is not None else 0))


def _texts(events: list[Output], engine: int | None, kind: str) -> str:
    return "".join(str(o.content.get("text", "")) for o in events if o.engine == engine and o.kind == kind)


def show_outputs(events: list[Output], group_outputs: str = "type", streamed: bool = False) -> None:
    """Show a finished run's outputs.

    ``type``: every engine's stdout, then stderr, then rich output, then values; ``engine``:
    everything of engine 0 in the order it was produced, then engine 1, ...; ``order``: like
    ``type`` but the rich outputs are collated: the first figure of every engine, then the
    second, ...  With ``streamed`` text and rich output were shown as they came: only the values
    are left.  Errors are not shown here: the exception the magic raises shows them.
    """
    engines = _engines(events)
    if streamed:
        for e in engines:
            for o in events:
                if o.engine == e and o.kind == "result":
                    show_result(e, o.content)
        return
    if group_outputs == "engine":
        for e in engines:
            _show_engine(e, [o for o in events if o.engine == e])
        return
    for kind in ("stdout", "stderr"):
        for e in engines:
            show_text(kind, e, _texts(events, e, kind))
    displays = {e: [o for o in events if o.engine == e and o.kind == "display"] for e in engines}
    if group_outputs == "order":
        for i in range(max((len(d) for d in displays.values()), default=0)):
            for e in engines:
                if i < len(displays[e]):
                    show_display(e, displays[e][i].content)
    else:
        for e in engines:
            for i, o in enumerate(displays[e]):
                show_display(e, o.content, labelled=i == 0)
    for e in engines:
        for o in events:
            if o.engine == e and o.kind == "result":
                show_result(e, o.content)


def _show_engine(engine: int | None, events: list[Output]) -> None:
    """One engine's outputs in the order produced (runs of text of one stream joined)."""
    labelled = False
    # consecutive outputs of one kind form a run; a run of text is shown as one block
    for kind, run in itertools.groupby(events, key=lambda o: o.kind):
        outs = list(run)
        if kind in ("stdout", "stderr"):
            show_text(kind, engine, "".join(str(o.content.get("text", "")) for o in outs))
        elif kind == "display":
            for o in outs:
                show_display(engine, o.content, labelled=not labelled)
                labelled = True
        elif kind == "result":
            for o in outs:
                show_result(engine, o.content)


class LineStreamer:
    """Shows streamed text line by line, each line labelled with its engine and stream.

    Chunks arrive cut anywhere; a partial line waits for its end (or :meth:`finish`).
    """

    def __init__(self) -> None:
        self._partial: dict[tuple[str, int | None], str] = {}

    def feed(self, out: Output) -> None:
        if out.kind not in ("stdout", "stderr"):
            return
        key = (out.kind, out.engine)
        text = self._partial.pop(key, "") + str(out.content.get("text", ""))
        *lines, rest = text.split("\n")
        if lines:
            self._write(out.kind, out.engine, "".join(f"[{out.kind}:{_label(out.engine)}] {line}\n"
                                                      for line in lines))
        if rest:
            self._partial[key] = rest

    def finish(self) -> None:
        """Show the partial lines still held (the run is over)."""
        for (kind, engine), rest in sorted(self._partial.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            self._write(kind, engine, f"[{kind}:{_label(engine)}] {rest}\n")
        self._partial.clear()

    @staticmethod
    def _write(kind: str, engine: int | None, text: str) -> None:
        stream = sys.stderr if kind == "stderr" else sys.stdout
        stream.write(text)
        stream.flush()
