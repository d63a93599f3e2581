"""The signal by which an engine declines a task whose functional dependency is unmet.

A function wrapped by ``@require`` / ``@depend`` (:mod:`ipcluster.client.dependency`) raises
:class:`Declined` on an engine where its condition does not hold.  The engine recognises it and
replies ``apply_reply`` with status ``"unmet"`` instead of an error; the scheduler then tries
another engine.  It lives in the protocol package because both the client side and the engines use
it, and engines import nothing from ``ipcluster`` beyond ``protocol`` and ``errors``.
"""

from __future__ import annotations


class Declined(Exception):
    """Raised on an engine where a task's ``@require`` / ``@depend`` is unmet: the engine declines.

    Not an error of the task.  ``reason`` says what is missing (it becomes the reply's ``evalue``).
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


__all__ = ["Declined"]
