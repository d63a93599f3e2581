"""Fixtures shared by the unit tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def engine_log():
    """Records of the ``engines`` loggers (whose propagation an engine's setup_logging turns off)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("engines")
    saved = logger.level, logger.propagate, list(logger.handlers)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]
