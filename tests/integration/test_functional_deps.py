"""Functional dependencies (@require / @depend) against a real controller and engines."""

from __future__ import annotations

import os
import time

import pytest

import ipcluster
from ipcluster import errors


@ipcluster.interactive
def flag_set() -> bool:
    return bool(globals().get("engine_flag"))


def test_depend_runs_only_where_the_condition_holds(rc):
    rc[1].push({"engine_flag": True}, block=True)
    pid1 = rc[1].apply_sync(os.getpid)
    task = ipcluster.depend(flag_set)(os.getpid)
    lview = rc.load_balanced_view()
    ars = [lview.apply_async(task) for _ in range(30)]
    assert {ar.get(timeout=20) for ar in ars} == {pid1}
    assert {ar.engine_id for ar in ars} == {1}


def test_require_module_present_on_one_engine_only(rc, tmp_path):
    (tmp_path / "fd_only_here.py").write_text("VALUE = 7\n")
    rc[0].execute(f"import sys; sys.path.insert(0, {str(tmp_path)!r})", block=True)
    try:
        @ipcluster.require("fd_only_here")
        @ipcluster.interactive
        def use_it(x):
            return fd_only_here.VALUE + x  # noqa: F821 - imported by @require on the engine

        lview = rc.load_balanced_view()
        ars = [lview.apply_async(use_it, i) for i in range(20)]
        assert [ar.get(timeout=20) for ar in ars] == [7 + i for i in range(20)]
        assert {ar.engine_id for ar in ars} == {0}
        # through a DirectView, the engine without the module fails clearly
        with pytest.raises(errors.UnmetDependency, match="fd_only_here"):
            rc[1].apply_sync(use_it, 0)
        assert rc[0].apply_sync(use_it, 1) == 8
    finally:
        rc[0].execute(f"import sys; sys.path.remove({str(tmp_path)!r}); sys.modules.pop('fd_only_here', None)",
                      block=True)


def test_requirement_no_engine_meets_fails_fast(rc):
    task = ipcluster.require("no_such_module_anywhere_xyz")(lambda: 1)
    lview = rc.load_balanced_view()
    start = time.monotonic()
    with pytest.raises(errors.UnmetDependency):
        lview.apply_sync(task)
    assert time.monotonic() - start < 5
    ar = lview.apply_async(ipcluster.depend(lambda: False)(lambda: 1))
    with pytest.raises(errors.UnmetDependency):
        ar.get(timeout=10)
    # the cluster is still usable
    assert lview.apply_sync(lambda: 3) == 3


def test_directview_on_incapable_engine_fails_clearly(rc):
    rc[1].push({"engine_flag": True}, block=True)
    task = ipcluster.depend(flag_set)(lambda: "ran")
    with pytest.raises(errors.UnmetDependency, match="flag_set"):
        rc[0].apply_sync(task)
    assert rc[1].apply_sync(task) == "ran"


def test_require_numpy(rc):
    pytest.importorskip("numpy")

    @ipcluster.require("numpy", np="numpy")
    @ipcluster.interactive
    def total(n):
        return int(numpy.arange(n).sum()) + int(np.zeros(1).sum())  # noqa: F821

    lview = rc.load_balanced_view()
    assert lview.map_sync(total, [4, 5]) == [6, 10]
    assert rc[:].apply_sync(total, 3) == [3, 3]
