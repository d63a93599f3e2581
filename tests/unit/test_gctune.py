"""relax_gc: only CPython's default thresholds are changed."""

from __future__ import annotations

import gc

import pytest

from ipcluster.gctune import CPYTHON_DEFAULT, RELAXED_THRESHOLD, relax_gc

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_defaults_are_relaxed(thresholds):
    gc.set_threshold(*CPYTHON_DEFAULT)
    assert relax_gc()
    assert gc.get_threshold() == (RELAXED_THRESHOLD, *CPYTHON_DEFAULT[1:])
    assert not relax_gc()  # already relaxed: nothing to do


def test_chosen_thresholds_are_left_alone(thresholds):
    gc.set_threshold(2000, 5, 5)
    assert not relax_gc()
    assert gc.get_threshold() == (2000, 5, 5)
