"""Fixtures that start real clusters (controller + engines) on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cloudpickle
import pytest

import ipcluster
from tests.integration.faults import cluster  # noqa: F401 - the fault-injection fixture (see faults.py)


@pytest.fixture(autouse=True)
def _ship_test_module_by_value(request):
    """Engines cannot import test modules: send their functions and classes by value."""
    try:
        cloudpickle.register_pickle_by_value(request.module)
    except ValueError:
        pass  # already registered


def _start(profile_dir: Path, n: int) -> ipcluster.Cluster:
    cluster = ipcluster.Cluster(n=n, profile_dir=str(profile_dir), log_level="INFO")
    cluster.start_and_connect_sync()
    return cluster


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory) -> Iterator[ipcluster.Cluster]:
    """A 2-engine cluster shared by the tests of one module (they must leave it usable)."""
    pdir = tmp_path_factory.mktemp("profile")
    cluster = _start(pdir, 2)
    try:
        yield cluster
    finally:
        cluster.stop_cluster_sync()


@pytest.fixture
def rc(shared_cluster) -> Iterator[ipcluster.Client]:
    """A fresh client of the shared cluster, with the engines' namespaces cleared."""
    client = ipcluster.Client(url_file=shared_cluster.connection_file)
    client.wait_for_engines(2, timeout=30)
    client.clear(block=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fresh_cluster(tmp_path) -> Iterator[ipcluster.Cluster]:
    """A 2-engine cluster of its own, for tests that kill or break engines."""
    cluster = _start(tmp_path / "profile", 2)
    try:
        yield cluster
    finally:
        cluster.stop_cluster_sync()
