"""A userspace TCP proxy that can be paused: a network partition without root.

Each :class:`Proxy` listens on ``127.0.0.1:<port>`` and forwards every connection to one target
port, both ways, on an asyncio loop in a thread of its own.  :meth:`Proxy.pause` stops forwarding
(connections stay open, bytes wait in the kernel buffers: to both ends the peer just went
silent, as behind a cut cable); :meth:`Proxy.resume` delivers what waited and carries on.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Iterable


class Proxy:
    """Forwards ``127.0.0.1:<self.ports[target]>`` to ``host:target`` for each target port."""

    def __init__(self, targets: Iterable[int], host: str = "127.0.0.1"):
        self.host = host
        self.targets = list(targets)
        self.ports: dict[int, int] = {}
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="test-tcp-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the proxy did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _listen(self) -> None:
        self._open.set()
        for target in self.targets:
            server = await asyncio.start_server(lambda r, w, t=target: self._serve(r, w, t), "127.0.0.1", 0)
            self._servers.append(server)
            self.ports[target] = server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._open.wait()  # paused: read nothing, so nothing moves
                data = await reader.read(65536)
                if not data:
                    break
                await self._open.wait()  # a read that completed as the pause began waits too
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)

    def pause(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        async def shutdown() -> None:
            self._open.set()
            for server in self._servers:
                server.close()
            for w in list(self._writers):
                w.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
