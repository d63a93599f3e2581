"""Client(tune_gc=...) and the process's garbage-collector thresholds."""

from __future__ import annotations

import gc

import ipcluster
from ipcluster.gctune import CPYTHON_DEFAULT, RELAXED_THRESHOLD


def test_client_relaxes_default_thresholds_unless_told_not_to(shared_cluster):
    saved = gc.get_threshold()
    try:
        gc.set_threshold(*CPYTHON_DEFAULT)
        with ipcluster.Client(url_file=shared_cluster.connection_file, tune_gc=False):
            assert gc.get_threshold() == CPYTHON_DEFAULT
        with ipcluster.Client(url_file=shared_cluster.connection_file):
            assert gc.get_threshold()[0] == RELAXED_THRESHOLD
    finally:
        gc.set_threshold(*saved)


def test_engines_run_with_relaxed_thresholds(rc):
    assert rc[:].apply_sync(lambda: __import__("gc").get_threshold()[0]) == [RELAXED_THRESHOLD] * 2
