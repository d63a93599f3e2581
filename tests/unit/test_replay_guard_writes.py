"""The replay-guard file is written off the controller's loop, and never again after a clean stop."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from controller.replayguard import ReplayGuardFile, save_periodically
from ipcluster.protocol.session import Session

pytestmark = pytest.mark.timeout(20)

KEY = b"k" * 64


def _guard(tmp_path) -> tuple[ReplayGuardFile, Session, Session]:
    sender, receiver = Session(KEY), Session(KEY)
    receiver.check_freshness(600.0, digest_history=8)
    return ReplayGuardFile(tmp_path / "g.json", receiver, logging.getLogger("test")), sender, receiver


def test_the_periodic_save_writes_in_another_thread(tmp_path, monkeypatch):
    guard, sender, receiver = _guard(tmp_path)
    receiver.deserialize(sender.serialize("x"), has_idents=False, route="mux")
    writers: list[str] = []
    written = threading.Event()
    write = guard.write

    def recording_write(state):
        writers.append(threading.current_thread().name)
        write(state)
        written.set()

    monkeypatch.setattr(guard, "write", recording_write)

    async def main() -> None:
        task = asyncio.create_task(save_periodically(guard, interval=0.01))
        assert await asyncio.to_thread(written.wait, 10)
        task.cancel()

    asyncio.run(main())
    assert writers and threading.main_thread().name not in writers
    senders = json.loads(guard.path.read_text())["senders"]
    assert senders == [["mux", sender.session_id, pytest.approx(senders[0][2])]]


def test_nothing_is_written_after_a_clean_stop(tmp_path):
    guard, sender, receiver = _guard(tmp_path)
    receiver.deserialize(sender.serialize("x"), has_idents=False, route="mux")
    state = guard.changed_state()
    assert state is not None
    guard.write(state)
    assert guard.path.exists() and guard.changed_state() is None  # unchanged since: nothing to write
    guard.remove()
    assert not guard.path.exists()
    guard.write(state)  # a write that was on its way when the controller stopped
    assert not guard.path.exists()
