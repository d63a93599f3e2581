"""The replay guard beyond its memory: stale messages, forgotten signatures, restarts, the guard file."""

from __future__ import annotations

import json
import logging
import os
import stat
import time

import pytest

from controller.replayguard import ReplayGuardFile, fingerprint, guard_file_path
from controller.router import MAX_DROP_KINDS, DropLog
from ipcluster.errors import InvalidSignature, ReplayedMessage, StaleMessage
from ipcluster.protocol.session import Session

pytestmark = pytest.mark.timeout(20)

KEY = b"k" * 64


def fresh_receiver(history: int = 8, max_age: float = 600.0) -> Session:
    s = Session(KEY)
    s.check_freshness(max_age, digest_history=history)
    return s


def test_a_message_older_than_max_age_is_stale():
    sender, receiver = Session(KEY), fresh_receiver(max_age=60)
    old = sender.header("x")
    old["date"] = time.time() - 120
    with pytest.raises(StaleMessage):
        receiver.deserialize(sender.serialize("x", header=old), has_idents=False)
    assert receiver.rejected["stale"] == 1
    receiver.deserialize(sender.serialize("x"), has_idents=False)  # a current one passes


def test_a_replay_of_a_forgotten_signature_is_stale_not_accepted():
    sender, receiver = Session(KEY), fresh_receiver(history=4)
    first = sender.serialize("x")
    receiver.deserialize(first, has_idents=False)
    for _ in range(10):  # pushes the first signature out of the 4 remembered
        receiver.deserialize(sender.serialize("x"), has_idents=False)
    assert receiver.guard_sizes()["digests"] == 4
    with pytest.raises(ReplayedMessage):
        receiver.deserialize(first, has_idents=False)
    assert receiver.rejected["stale"] == 1


def test_without_freshness_a_forgotten_signature_would_pass():
    """What the horizon closes: a plain guard only remembers so many signatures."""
    sender, receiver = Session(KEY), Session(KEY, digest_history=4)
    first = sender.serialize("x")
    receiver.deserialize(first, has_idents=False)
    for _ in range(10):
        receiver.deserialize(sender.serialize("x"), has_idents=False)
    receiver.deserialize(first, has_idents=False)


def test_horizons_are_per_route_and_sender():
    a, b, receiver = Session(KEY), Session(KEY), fresh_receiver(history=2)
    early_b = b.serialize("x")  # dated before a's messages below
    for _ in range(5):
        receiver.deserialize(a.serialize("x"), has_idents=False, route="mux")
    receiver.deserialize(early_b, has_idents=False, route="mux")  # b's own horizon is unset
    late_a_on_hub = a.serialize("x")
    receiver.deserialize(late_a_on_hub, has_idents=False, route="hub")


def test_the_guard_state_carries_across_a_restart(tmp_path):
    sender = Session(KEY)
    before = fresh_receiver()
    recorded = sender.serialize("apply_request", buffers=[b"payload"])
    before.deserialize(recorded, has_idents=False, route="mux")
    path = guard_file_path(tmp_path / "security" / "ipcluster-abc-connection.json")
    assert path.name == "ipcluster-abc-replay-guard.json"
    ReplayGuardFile(path, before, logging.getLogger("test")).save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["key"] == fingerprint(KEY) and KEY.decode() not in path.read_text()

    after = fresh_receiver()  # a restarted controller: nothing remembered
    assert ReplayGuardFile(path, after, logging.getLogger("test")).load() == 1
    with pytest.raises(StaleMessage):
        after.deserialize(recorded, has_idents=False, route="mux")
    after.deserialize(sender.serialize("apply_request"), has_idents=False, route="mux")  # sent after: fine

    other_key = Session(b"other" * 10)
    other_key.check_freshness()
    assert ReplayGuardFile(path, other_key, logging.getLogger("test")).load() == 0


def test_restore_guard_skips_malformed_entries():
    s = fresh_receiver()
    assert s.restore_guard([["mux", "sess", 1.0], ["mux"], "junk", [1, 2, 3], ["mux", "s", "date"]]) == 1


def test_a_bad_signature_is_refused_before_freshness_is_looked_at():
    forger, receiver = Session(b"wrong" * 10), fresh_receiver()
    with pytest.raises(InvalidSignature):
        receiver.deserialize(forger.serialize("x"), has_idents=False)
    assert receiver.rejected == {"signature": 1, "replay": 0, "stale": 0, "malformed": 0}


def test_a_signed_header_without_a_date_is_malformed():
    sender, receiver = Session(KEY), fresh_receiver()
    header = sender.header("x")
    del header["date"]
    from ipcluster.errors import MalformedMessage

    with pytest.raises(MalformedMessage):
        receiver.deserialize(sender.serialize("x", header=header), has_idents=False)


def test_guard_memory_is_bounded():
    sender, receiver = Session(KEY), fresh_receiver(history=100)
    for _ in range(1000):
        receiver.deserialize(sender.serialize("x"), has_idents=False, route="mux")
    assert receiver.guard_sizes() == {"digests": 100, "horizons": 1, "senders": 1}


def test_drop_log_kinds_and_lines_are_bounded(caplog):
    drops = DropLog(logging.getLogger("test.drops"))
    with caplog.at_level(logging.WARNING, logger="test.drops"):
        for n in range(5000):
            drops.drop("mux_front", f"MalformedMessage: message has {n} frames" + "x" * 10_000, b"peer")
        for n in range(MAX_DROP_KINDS * 2):
            drops.drop("hub", f"kind{n}", b"p")
    assert drops.counts[("mux_front", "MalformedMessage")] == 5000
    assert len(drops.counts) <= MAX_DROP_KINDS + 2
    assert all(len(r.getMessage()) < 400 for r in caplog.records)
    assert sum("mux_front" in r.getMessage() for r in caplog.records) == 4  # at 1, 10, 100, 1000
