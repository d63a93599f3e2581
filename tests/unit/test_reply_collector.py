"""ReplyCollector: how a blocking call on many engines per CPU waits and when it handles replies."""

from __future__ import annotations

import os

import pytest

from ipcluster.client import collect
from ipcluster.client.collect import ReplyCollector, looks_like_reply
from ipcluster.protocol.session import DELIM


def msg(msg_type: str) -> list[bytes]:
    return [DELIM, b"sig", b'{"msg_id":"a-1","msg_type":"%s"}' % msg_type.encode(), b"{}", b"{}", b"{}"]


class Pipe:
    """A readable descriptor standing in for a link (select.poll works on pipes)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def fileno(self) -> int:
        return self.r

    def ready(self) -> None:
        os.write(self.w, b"x")

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class AllPoller:
    """The poller over every link: here, which pipes have bytes."""

    def __init__(self, pipes: list[Pipe]) -> None:
        import select

        self._poll = select.poll()
        for p in pipes:
            self._poll.register(p.fileno(), select.POLLIN)

    def poll(self, timeout_ms: int) -> list[tuple[int, int]]:
        return self._poll.poll(timeout_ms)


@pytest.fixture
def pipes():
    made = [Pipe() for _ in range(3)]
    yield made
    for p in made:
        p.close()


def test_replies_are_told_from_output():
    assert looks_like_reply(msg("apply_reply"))
    assert looks_like_reply(msg("execute_reply"))
    assert not looks_like_reply(msg("stream"))
    assert not looks_like_reply(msg("display_data"))
    assert not looks_like_reply([b"no delimiter", b'"apply_reply"'])
    assert not looks_like_reply([DELIM, b"sig"])  # cut short: not a reply (checked in full later)
    assert looks_like_reply([b"ident", DELIM, b"sig", b'{"msg_type":"apply_reply"}'])


def test_handled_once_every_link_answered_in_arrival_order(pipes):
    a, b, c = (p.fileno() for p in pipes)
    col = ReplyCollector(pipes, AllPoller(pipes), 50)
    assert col.straggler() == c  # the last one sent to
    col.keep(c, msg("apply_reply"))
    assert not col.due() and col.straggler() == b
    col.keep(a, msg("apply_reply"))
    assert not col.due() and col.straggler() == b
    col.keep(b, msg("apply_reply"))
    assert col.due() and col.straggler() is None
    seen: list[list[bytes]] = []
    col.handle(seen.append)
    assert [m for m in seen] == [msg("apply_reply")] * 3 and not col.stash and not col.due()


def test_output_is_handled_at_once(pipes):
    a = pipes[0].fileno()
    col = ReplyCollector(pipes, AllPoller(pipes), 50)
    col.keep(a, msg("stream"))
    assert col.due() and col.straggler() == pipes[2].fileno()  # output pays no reply


def test_a_link_sent_to_twice_owes_two_replies(pipes):
    a, b = pipes[0], pipes[1]
    col = ReplyCollector([a, b, a], AllPoller(pipes), 50)
    col.keep(a.fileno(), msg("apply_reply"))
    assert col.straggler() == a.fileno()  # one reply of two
    col.keep(b.fileno(), msg("apply_reply"))
    assert col.straggler() == a.fileno() and not col.due()
    col.keep(a.fileno(), msg("apply_reply"))
    assert col.due()


def test_a_broken_link_is_no_longer_waited_for(pipes):
    a, b, c = (p.fileno() for p in pipes)
    col = ReplyCollector(pipes, AllPoller(pipes), 50)
    col.keep(a, msg("apply_reply"))
    col.keep(b, msg("apply_reply"))
    col.forget(c)
    assert col.straggler() is None and col.due()


def test_an_interrupted_handling_keeps_what_was_not_handled(pipes):
    a, b, c = (p.fileno() for p in pipes)
    col = ReplyCollector(pipes, AllPoller(pipes), 50)
    for fd in (a, b, c):
        col.keep(fd, msg("apply_reply"))
    handled = []

    def run(frames):
        handled.append(frames)
        if len(handled) == 2:
            raise KeyboardInterrupt  # delivered after the second message was handled

    with pytest.raises(KeyboardInterrupt):
        col.handle(run)
    assert len(handled) == 2 and len(col.stash) == 1
    col.handle(handled.append)
    assert len(handled) == 3 and not col.stash


def test_wait_watches_the_straggler_then_looks_at_every_link(pipes):
    a, b, c = pipes
    col = ReplyCollector(pipes, AllPoller(pipes), 50)
    a.ready()  # an earlier link answered; the straggler (c) has not: the wait times out, then sees a
    assert [fd for fd, _ in col.wait()] == [a.fileno()]
    assert not col.due()  # something new came: nothing to handle yet
    c.ready()
    assert sorted(fd for fd, _ in col.wait()) == sorted([a.fileno(), c.fileno()])


def test_a_wait_with_nothing_new_backs_off_and_makes_the_stash_due(pipes, monkeypatch):
    monkeypatch.setattr(collect, "FIRST_WAIT_MS", 1)
    col = ReplyCollector(pipes, AllPoller(pipes), 8)
    col.keep(pipes[0].fileno(), msg("apply_reply"))
    assert not col.due()
    waits = []
    for _ in range(5):
        assert col.wait() == []
        waits.append(col._wait_ms)
    assert waits == [2, 4, 8, 8, 8]  # doubling, up to the poll slice
    assert col.due()
    pipes[2].ready()
    assert col.wait() and col._wait_ms == 1  # an answer: back to the first wait
