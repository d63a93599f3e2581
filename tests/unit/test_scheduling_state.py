"""The sans-I/O task scheduler: events in, instructions out, no sockets and no clocks."""

from __future__ import annotations

import pytest

from controller.scheduling.dependencies import Dependency
from controller.scheduling.state import Assign, Fail, Finished, Task, TaskScheduler
from controller.scheduling.tasks import ENAMES

A, B, C = b"A", b"B", b"C"
CLIENT = b"client-1"


def task(msg_id: str, targets=None, **kw) -> Task:
    return Task(msg_id, CLIENT, targets, **kw)


def dep(*ids: str, **flags: bool) -> Dependency:
    return Dependency.of(ids, **flags)


def sched(*engines: bytes, **kw) -> TaskScheduler:
    s = TaskScheduler(**kw)
    for e in engines:
        assert s.add_engine(e, 0.0) == []
    return s


def fails(out) -> dict[str, str]:
    return {i.msg_id: i.ename for i in out if isinstance(i, Fail)}


def assigns(out) -> list[tuple[str, bytes]]:
    return [(i.msg_id, i.engine) for i in out if isinstance(i, Assign)]


def run(s: TaskScheduler, msg_id: str, success: bool = True, now: float = 0.0) -> Finished:
    engine = s.engine_of(msg_id)
    assert engine is not None, f"{msg_id} is not running"
    return s.finished(engine, msg_id, success, now)


# ---- construction -----------------------------------------------------------------------------


def test_unknown_policy_and_bad_hwm_rejected():
    with pytest.raises(ValueError, match="leastload"):
        TaskScheduler(policy="nope")
    with pytest.raises(ValueError):
        TaskScheduler(hwm=-1)


def test_duplicate_msg_id_rejected():
    s = sched()
    s.submit(task("t"), 0)
    with pytest.raises(ValueError):
        s.submit(task("t"), 0)


# ---- basic assignment -------------------------------------------------------------------------


def test_submit_assigns_to_engine():
    s = sched(A)
    assert s.submit(task("t"), 0) == [Assign("t", A)]
    assert s.engine_of("t") == A
    assert s.loads() == {A: 1}
    assert s.tasks_on(A) == {"t"}
    result = s.finished(A, "t", True, 1)
    assert result == Finished([], True)
    assert s.loads() == {A: 0}
    assert s.outcome("t") is True


def test_no_engines_tasks_wait_then_run_when_one_registers():
    s = sched()
    assert s.submit(task("t1"), 0) == []
    assert s.submit(task("t2"), 0) == []
    assert s.queued == 2
    assert s.add_engine(A, 5) == [Assign("t1", A), Assign("t2", A)]
    assert s.queued == 0


def test_leastload_spreads_over_engines():
    s = sched(A, B, C)
    out = []
    for i in range(6):
        out += s.submit(task(f"t{i}"), 0)
    assert [e for _, e in assigns(out)] == [A, B, C, A, B, C]
    assert s.loads() == {A: 2, B: 2, C: 2}


def test_leastload_sends_work_to_the_engine_that_freed_up():
    s = sched(A, B)
    s.submit(task("t1"), 0)
    s.submit(task("t2"), 0)
    run(s, "t2")
    assert s.submit(task("t3"), 0) == [Assign("t3", B)]


@pytest.mark.parametrize("policy", ["leastload", "lru", "plainrandom", "twobin", "weighted"])
def test_every_policy_runs_everything(policy):
    s = sched(A, B, C, policy=policy, hwm=2, seed=1)
    out = []
    for i in range(30):
        out += s.submit(task(f"t{i}"), 0)
    done = 0
    while s.queued or any(s.loads().values()):
        for e in (A, B, C):
            for m in sorted(s.tasks_on(e)):
                out += s.finished(e, m, True, 0).instructions
                done += 1
    assert done == 30
    assert not fails(out)
    assert len(assigns(out)) == 30


@pytest.mark.parametrize("policy", ["plainrandom", "twobin", "weighted"])
def test_seeded_scheduler_is_deterministic(policy):
    def trace(seed):
        s = sched(A, B, C, policy=policy, seed=seed)
        out = []
        for i in range(40):
            out += s.submit(task(f"t{i}"), 0)
            if i % 3 == 0:
                m = sorted(s.tasks_on(A) | s.tasks_on(B) | s.tasks_on(C))[0]
                out += run(s, m).instructions
        return assigns(out)

    assert trace(7) == trace(7)
    assert len({tuple(trace(seed)) for seed in range(5)}) > 1


# ---- high-water mark and ordering --------------------------------------------------------------


def test_hwm_caps_tasks_per_engine():
    s = sched(A, B, hwm=1)
    out = []
    for i in range(4):
        out += s.submit(task(f"t{i}"), 0)
    assert assigns(out) == [("t0", A), ("t1", B)]
    assert s.queued == 2
    assert s.finished(A, "t0", True, 1).instructions == [Assign("t2", A)]
    assert s.finished(A, "t2", True, 2).instructions == [Assign("t3", A)]
    assert s.loads() == {A: 1, B: 1}


def test_hwm_zero_is_unlimited():
    s = sched(A, hwm=0)
    out = []
    for i in range(100):
        out += s.submit(task(f"t{i}"), 0)
    assert len(assigns(out)) == 100


def test_ready_tasks_assigned_in_submission_order():
    s = sched(A, hwm=1)
    for i in range(5):
        s.submit(task(f"t{i}"), 0)
    order = ["t0"]
    while len(order) < 5:
        out = run(s, order[-1]).instructions
        order += [m for m, _ in assigns(out)]
    assert order == ["t0", "t1", "t2", "t3", "t4"]


def test_no_head_of_line_blocking_on_targets():
    s = sched(A, B, hwm=1)
    s.submit(task("busy"), 0)  # -> A
    s.submit(task("busy2"), 0)  # -> B
    assert s.engine_of("busy") == A
    run(s, "busy2")  # B is free, A is full
    out = s.submit(task("onlyA", targets=[A]), 0)
    assert out == []  # waits for A
    assert s.submit(task("any"), 0) == [Assign("any", B)]  # not stuck behind onlyA


def test_no_head_of_line_blocking_on_dependencies():
    s = sched(A)
    s.submit(task("slow"), 0)
    assert s.submit(task("blocked", after=dep("slow")), 0) == []
    assert s.submit(task("free"), 0) == [Assign("free", A)]
    out = run(s, "slow").instructions
    assert out == [Assign("blocked", A)]


def test_targets_respected():
    s = sched(A, B, C)
    out = []
    for i in range(5):
        out += s.submit(task(f"t{i}", targets=[C]), 0)
    assert {e for _, e in assigns(out)} == {C}


def test_targets_not_yet_registered_wait():
    s = sched(A)
    assert s.submit(task("t", targets=[B]), 0) == []
    assert s.add_engine(B, 1) == [Assign("t", B)]


def test_empty_targets_impossible():
    s = sched(A)
    out = s.submit(task("t", targets=[]), 0)
    assert out == [Fail("t", "ImpossibleDependency", out[0].evalue, CLIENT)]


def test_targets_all_dead_fail():
    s = sched(A, B)
    s.remove_engine(B, 0)
    assert fails(s.submit(task("t", targets=[B]), 0)) == {"t": "ImpossibleDependency"}
    s2 = sched(A, B, hwm=1)
    s2.submit(task("x", targets=[B]), 0)
    s2.submit(task("y", targets=[B]), 0)  # queued behind x
    out = s2.remove_engine(B, 1)
    assert fails(out) == {"x": "EngineDied", "y": "ImpossibleDependency"}


# ---- time dependencies (after) ----------------------------------------------------------------


def test_after_waits_for_success():
    s = sched(A)
    s.submit(task("a"), 0)
    s.submit(task("b"), 0)
    assert s.submit(task("c", after=dep("a", "b")), 0) == []
    assert run(s, "a").instructions == []
    assert run(s, "b").instructions == [Assign("c", A)]


def test_after_on_finished_task_runs_at_once():
    s = sched(A)
    s.submit(task("a"), 0)
    run(s, "a")
    assert s.submit(task("b", after=dep("a")), 0) == [Assign("b", A)]


def test_after_on_failed_task_impossible_at_once():
    s = sched(A)
    s.submit(task("a"), 0)
    run(s, "a", success=False)
    assert fails(s.submit(task("b", after=dep("a")), 0)) == {"b": "ImpossibleDependency"}


def test_after_becomes_impossible_when_prerequisite_fails():
    s = sched(A)
    s.submit(task("a"), 0)
    s.submit(task("b", after=dep("a")), 0)
    out = run(s, "a", success=False)
    assert out.deliver is True
    assert fails(out.instructions) == {"b": "ImpossibleDependency"}


def test_after_failure_only():
    s = sched(A)
    s.submit(task("a"), 0)
    s.submit(task("cleanup", after=dep("a", success=False, failure=True)), 0)
    assert run(s, "a", success=False).instructions == [Assign("cleanup", A)]


def test_after_any():
    s = sched(A)
    s.submit(task("a"), 0)
    s.submit(task("b"), 0)
    s.submit(task("c", after=dep("a", "b", all=False)), 0)
    assert run(s, "a", success=False).instructions == []
    assert run(s, "b").instructions == [Assign("c", A)]
    s.submit(task("d"), 0)
    s.submit(task("e"), 0)
    s.submit(task("f", after=dep("d", "e", all=False)), 0)
    run(s, "d", success=False)
    assert fails(run(s, "e", success=False).instructions) == {"f": "ImpossibleDependency"}


def test_unknown_dependency_invalid_at_once():
    s = sched(A)
    out = s.submit(task("t", after=dep("never-seen")), 0)
    assert fails(out) == {"t": "InvalidDependency"}
    out = s.submit(task("u", follow=dep("never-seen")), 0)
    assert fails(out) == {"u": "InvalidDependency"}


def test_self_dependency_invalid():
    s = sched(A)
    assert fails(s.submit(task("t", after=dep("t")), 0)) == {"t": "InvalidDependency"}


def test_failure_cascades_through_chains():
    s = sched()
    s.submit(task("t0"), 0)
    for i in range(1, 2000):  # long chain: resolved iteratively, not recursively
        s.submit(task(f"t{i}", after=dep(f"t{i - 1}")), 0)
    out = s.abort(["t0"], 1)
    assert len(fails(out)) == 2000
    assert fails(out)["t1999"] == "ImpossibleDependency"
    assert s.queued == 0


def test_dependency_on_failed_submission_is_impossible():
    s = sched(A)
    s.submit(task("bad", after=dep("nope")), 0)
    assert fails(s.submit(task("t", after=dep("bad")), 0)) == {"t": "ImpossibleDependency"}


def test_record_outcome_of_external_tasks():
    s = sched(A)
    s.record_outcome("direct1", True, A)
    assert s.submit(task("t", after=dep("direct1")), 0) == [Assign("t", A)]
    s.record_outcome("direct2", False, A)
    assert fails(s.submit(task("u", after=dep("direct2")), 0)) == {"u": "ImpossibleDependency"}


def test_record_pending_lets_tasks_wait_on_external_work():
    s = sched(A)
    s.record_pending("direct")
    assert s.submit(task("t", after=dep("direct")), 0) == []
    assert s.record_outcome("direct", True, B) == [Assign("t", A)]


def test_outcomes_bounded():
    s = sched(A, max_outcomes=10)
    for i in range(50):
        s.submit(task(f"t{i}"), 0)
        run(s, f"t{i}")
    assert s.outcome("t49") is True
    assert s.outcome("t0") is None
    # a forgotten prerequisite is unknown
    assert fails(s.submit(task("x", after=dep("t0")), 0)) == {"x": "InvalidDependency"}


# ---- location dependencies (follow) -----------------------------------------------------------


def test_follow_runs_where_prerequisite_ran():
    s = sched(A, B, C)
    s.submit(task("a"), 0)
    s.submit(task("b"), 0)
    assert s.engine_of("b") == B
    run(s, "b")
    out = []
    for i in range(4):
        out += s.submit(task(f"f{i}", follow=dep("b")), 0)
    assert {e for _, e in assigns(out)} == {B}


def test_follow_waits_for_prerequisite():
    s = sched(A, B)
    s.submit(task("a"), 0)
    s.submit(task("b"), 0)
    assert s.submit(task("f", follow=dep("b")), 0) == []
    assert run(s, "b").instructions == [Assign("f", B)]


def test_follow_all_on_different_engines_impossible():
    s = sched(A, B)
    s.submit(task("a"), 0)
    s.submit(task("b"), 0)
    run(s, "a")
    run(s, "b")
    assert fails(s.submit(task("f", follow=dep("a", "b")), 0)) == {"f": "ImpossibleDependency"}
    # any: either engine will do
    assert assigns(s.submit(task("g", follow=dep("a", "b", all=False)), 0))[0][1] in {A, B}


def test_follow_onto_dead_engine_impossible():
    s = sched(A, B)
    s.submit(task("a"), 0)
    run(s, "a")  # ran on A
    s.submit(task("blocker", targets=[A]), 0)
    out = s.remove_engine(A, 1)
    assert fails(out) == {"blocker": "EngineDied"}
    assert fails(s.submit(task("f", follow=dep("a")), 2)) == {"f": "ImpossibleDependency"}


def test_queued_follow_task_fails_when_its_engine_dies():
    s = sched(A, B, hwm=1)
    s.submit(task("a"), 0)  # A
    run(s, "a")
    s.submit(task("busy", targets=[A]), 0)
    s.submit(task("f", follow=dep("a")), 0)  # waits for room on A
    assert s.is_queued("f")
    out = s.remove_engine(A, 1)
    assert fails(out) == {"busy": "EngineDied", "f": "ImpossibleDependency"}


def test_follow_and_targets_disagree_impossible():
    s = sched(A, B)
    s.submit(task("a"), 0)
    run(s, "a")
    assert fails(s.submit(task("f", targets=[B], follow=dep("a")), 0)) == {
        "f": "ImpossibleDependency"
    }


# ---- retries ----------------------------------------------------------------------------------


def test_retry_after_failure_on_another_engine_and_not_delivered():
    s = sched(A, B)
    s.submit(task("t", retries=1), 0)
    assert s.engine_of("t") == A
    result = s.finished(A, "t", False, 1)
    assert result == Finished([Assign("t", B)], False)
    result = s.finished(B, "t", False, 2)
    assert result == Finished([], True)  # out of retries: this failure is the answer
    assert s.outcome("t") is False


def test_retry_on_same_engine_when_it_is_the_only_one():
    s = sched(A)
    s.submit(task("t", retries=2), 0)
    assert s.finished(A, "t", False, 1) == Finished([Assign("t", A)], False)


def test_retry_waits_for_another_engine_with_room_rather_than_the_failed_one():
    s = sched(A, B, hwm=1)
    s.submit(task("t", retries=1), 0)  # A
    s.submit(task("other"), 0)  # B
    assert s.finished(A, "t", False, 1).instructions == []  # A free, but B is preferred
    assert run(s, "other").instructions == [Assign("t", B)]


def test_not_retryable_failure_is_delivered():
    s = sched(A, B)
    s.submit(task("t", retries=3), 0)
    assert s.finished(A, "t", False, 1, retryable=False) == Finished([], True)


def test_success_never_retried():
    s = sched(A, B)
    s.submit(task("t", retries=3), 0)
    assert s.finished(A, "t", True, 1) == Finished([], True)


def test_engine_death_retries_elsewhere_or_fails():
    s = sched(A, B)
    s.submit(task("r", retries=1), 0)  # A
    s.submit(task("n"), 0)  # B
    s.submit(task("r2", retries=1), 0)  # A
    out = s.remove_engine(A, 1)
    assert assigns(out) == [("r", B), ("r2", B)]
    out = s.remove_engine(B, 2)
    assert fails(out) == {"n": "EngineDied", "r": "EngineDied", "r2": "EngineDied"}
    assert all(f.client == CLIENT for f in out if isinstance(f, Fail))


def test_engine_death_with_no_other_engine_requeues():
    s = sched(A)
    s.submit(task("t", retries=1), 0)
    assert s.remove_engine(A, 1) == []
    assert s.queued == 1
    assert s.add_engine(B, 2) == [Assign("t", B)]


def test_stale_reply_from_removed_engine_ignored():
    s = sched(A, B)
    s.submit(task("t", retries=1), 0)
    s.remove_engine(A, 1)
    assert s.engine_of("t") == B
    assert s.finished(A, "t", True, 2) == Finished([], False)
    assert s.finished(B, "t", True, 3) == Finished([], True)
    assert s.finished(B, "t", True, 4) == Finished([], False)  # duplicate


def test_dependents_of_engine_death_resolve():
    s = sched(A)
    s.submit(task("a"), 0)
    s.submit(task("b", after=dep("a")), 0)
    assert fails(s.remove_engine(A, 1)) == {"a": "EngineDied", "b": "ImpossibleDependency"}


# ---- declines (functional dependencies) -------------------------------------------------------


def test_declined_goes_elsewhere_without_using_retries():
    s = sched(A, B)
    s.submit(task("t"), 0)
    assert s.declined(A, "t", 1) == [Assign("t", B)]
    assert s.finished(B, "t", True, 2) == Finished([], True)


def test_declined_everywhere_fails_unmet():
    s = sched(A, B, C)
    s.submit(task("t"), 0)
    assert s.declined(A, "t", 1) == [Assign("t", B)]
    assert s.declined(B, "t", 2) == [Assign("t", C)]
    out = s.declined(C, "t", 3)
    assert fails(out) == {"t": "UnmetDependency"}
    assert s.queued == 0


def test_declined_by_every_allowed_target_fails_unmet():
    s = sched(A, B, C)
    s.submit(task("t", targets=[A, B]), 0)
    s.declined(A, "t", 1)
    assert fails(s.declined(B, "t", 2)) == {"t": "UnmetDependency"}


def test_declined_never_sent_back_and_waits_for_a_busy_engine():
    s = sched(A, B, hwm=1)
    s.submit(task("busy"), 0)  # A
    s.submit(task("t"), 0)  # B
    assert s.declined(B, "t", 1) == []  # A is full; B declined: wait for A
    assert run(s, "busy").instructions == [Assign("t", A)]


def test_last_undeclining_engine_dying_fails_unmet():
    s = sched(A, B, hwm=1)
    s.submit(task("busy"), 0)  # A
    s.submit(task("t"), 0)  # B
    s.declined(B, "t", 1)
    out = s.remove_engine(A, 2)
    assert fails(out) == {"busy": "EngineDied", "t": "UnmetDependency"}


def test_decline_from_wrong_engine_ignored():
    s = sched(A, B)
    s.submit(task("t"), 0)
    assert s.declined(B, "t", 1) == []
    assert s.engine_of("t") == A


# ---- abort ------------------------------------------------------------------------------------


def test_abort_queued_only():
    s = sched(A, hwm=1)
    s.submit(task("running"), 0)
    s.submit(task("queued"), 0)
    s.submit(task("waiting", after=dep("running")), 0)
    out = s.abort(["running", "queued", "waiting", "unknown"], 1)
    assert fails(out) == {"queued": "TaskAborted", "waiting": "TaskAborted"}
    assert s.engine_of("running") == A
    assert run(s, "running").instructions == []
    assert s.queued == 0


def test_abort_releases_failure_dependents():
    s = sched(A, hwm=1)
    s.submit(task("busy"), 0)
    s.submit(task("q"), 0)
    s.submit(task("onfail", after=dep("q", success=False, failure=True)), 0)
    out = s.abort(["q"], 1)
    assert fails(out) == {"q": "TaskAborted"}
    assert run(s, "busy").instructions == [Assign("onfail", A)]


# ---- timeouts ---------------------------------------------------------------------------------


def test_timeout_of_queued_task_via_tick():
    s = sched()
    s.submit(task("t", timeout=5.0), 10.0)
    s.submit(task("u"), 10.0)
    assert s.next_deadline() == 15.0
    assert s.tick(14.9) == []
    out = s.tick(15.0)
    assert fails(out) == {"t": "TaskTimeout"}
    assert s.next_deadline() is None
    assert s.queued == 1  # u has no timeout


def test_timeout_does_not_apply_once_running():
    s = sched(A)
    s.submit(task("t", timeout=1.0), 0)
    assert s.next_deadline() is None
    assert s.tick(100) == []
    assert s.finished(A, "t", True, 100).deliver


def test_timeout_waiting_on_dependency():
    s = sched(A)
    s.submit(task("a"), 0)
    s.submit(task("b", after=dep("a"), timeout=2.0), 0)
    s.submit(task("c", after=dep("b")), 0)
    assert fails(s.tick(2.0)) == {"b": "TaskTimeout", "c": "ImpossibleDependency"}


def test_deadlines_in_order_and_stale_ones_skipped():
    s = sched(A, hwm=1)
    s.submit(task("run"), 0)
    s.submit(task("x", timeout=3.0), 0)
    s.submit(task("y", timeout=1.0), 0)
    assert s.next_deadline() == 1.0
    assert run(s, "run").instructions == [Assign("x", A)]
    assert s.next_deadline() == 1.0
    assert fails(s.tick(1.0)) == {"y": "TaskTimeout"}
    assert s.next_deadline() is None  # x is running


def test_retry_gets_a_fresh_deadline():
    s = sched(A, B, hwm=1)
    s.submit(task("t", retries=1, timeout=5.0), 0)  # A
    s.submit(task("busy"), 0)  # B
    s.finished(A, "t", False, 10.0)
    assert s.next_deadline() == 15.0


# ---- engines coming and going -----------------------------------------------------------------


def test_add_engine_twice_is_harmless_and_remove_unknown_ignored():
    s = sched(A)
    assert s.add_engine(A, 1) == []
    assert s.engines == (A,)
    assert s.remove_engine(B, 1) == []


def test_removed_engine_leaves_loads():
    s = sched(A, B)
    s.remove_engine(A, 1)
    assert s.loads() == {B: 0}
    assert s.engines == (B,)


def test_engine_returning_after_removal_is_usable():
    s = sched(A)
    s.remove_engine(A, 1)
    s.add_engine(A, 2)
    assert s.submit(task("t", targets=[A]), 3) == [Assign("t", A)]


def test_fail_enames_are_known():
    s = sched(A, B, hwm=1)
    out = []
    out += s.submit(task("x", after=dep("??")), 0)
    out += s.submit(task("y", targets=[]), 0)
    out += s.submit(task("busy1"), 0)
    out += s.submit(task("busy2"), 0)
    out += s.submit(task("z", timeout=0.0), 0)
    out += s.tick(0.0)
    out += s.remove_engine(A, 0)
    enames = {f.ename for f in out if isinstance(f, Fail)}
    assert enames == {"InvalidDependency", "ImpossibleDependency", "TaskTimeout", "EngineDied"}
    assert enames <= ENAMES


def test_retried_task_keeps_its_place_before_later_tasks():
    s = sched(A, B, hwm=1)
    s.submit(task("t0", retries=1), 0)  # A
    s.submit(task("t1"), 0)  # B
    s.submit(task("t2"), 0)
    s.submit(task("t3"), 0)
    # t0 fails on A; A has room but t0 prefers another engine, so t2 takes A
    assert s.finished(A, "t0", False, 1).instructions == [Assign("t2", A)]
    # B frees up: the older t0 goes before t3
    assert run(s, "t1").instructions == [Assign("t0", B)]
    assert run(s, "t2").instructions == [Assign("t3", A)]


def test_many_pinned_tasks_do_not_starve_a_free_engine():
    s = sched(A, B, hwm=1)
    for i in range(500):
        s.submit(task(f"p{i}", targets=[A]), 0)
    assert s.submit(task("free"), 0) == [Assign("free", B)]
    assert run(s, "p0").instructions == [Assign("p1", A)]


# ---- randomized invariants --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_random_event_sequences_keep_invariants(seed):
    """Whatever happens, hwm holds, declines are honoured and every task is answered exactly once."""
    import random

    rng = random.Random(seed)
    hwm = rng.choice([0, 1, 2])
    s = TaskScheduler(policy=rng.choice(["leastload", "lru", "twobin", "weighted"]), hwm=hwm, seed=seed)
    engines = [bytes([65 + i]) for i in range(4)]
    live: list[bytes] = []
    answered: dict[str, int] = {}
    declined: dict[str, set[bytes]] = {}
    submitted: list[str] = []
    now = 0.0

    def apply(out):
        for ins in out:
            if isinstance(ins, Fail):
                answered[ins.msg_id] = answered.get(ins.msg_id, 0) + 1
            else:
                assert ins.engine in live
                assert ins.engine not in declined.get(ins.msg_id, ())

    for step in range(400):
        now += rng.random()
        roll = rng.random()
        if roll < 0.1 and len(live) < len(engines):
            e = rng.choice([e for e in engines if e not in live])
            live.append(e)
            apply(s.add_engine(e, now))
        elif roll < 0.15 and live:
            e = rng.choice(live)
            live.remove(e)
            apply(s.remove_engine(e, now))
        elif roll < 0.5:
            m = f"t{step}"
            kw: dict = {"retries": rng.choice([0, 0, 1, 2])}
            if submitted and rng.random() < 0.3:
                kw["after"] = dep(*rng.sample(submitted, min(2, len(submitted))), all=rng.random() < 0.5)
            if submitted and rng.random() < 0.1:
                kw["follow"] = dep(rng.choice(submitted))
            if rng.random() < 0.2:
                kw["targets"] = rng.sample(engines, 2)
            if rng.random() < 0.3:
                kw["timeout"] = rng.random() * 5
            submitted.append(m)
            apply(s.submit(task(m, **kw), now))
        elif roll < 0.85 and live:
            e = rng.choice(live)
            running = sorted(s.tasks_on(e))
            if running:
                m = rng.choice(running)
                if rng.random() < 0.15:
                    declined.setdefault(m, set()).add(e)
                    apply(s.declined(e, m, now))
                else:
                    result = s.finished(e, m, rng.random() < 0.7, now)
                    if result.deliver:
                        answered[m] = answered.get(m, 0) + 1
                    apply(result.instructions)
        elif roll < 0.9 and submitted:
            apply(s.abort(rng.sample(submitted, 1), now))
        else:
            apply(s.tick(now))
        loads = s.loads()
        assert set(loads) == set(live)
        if hwm:
            assert all(n <= hwm for n in loads.values())
        assert all(n == 1 for n in answered.values()), answered
        deadline = s.next_deadline()
        if deadline is not None and deadline <= now:
            late = s.tick(now)
            assert late, "next_deadline() promised work that tick() did not do"
            apply(late)

    # drain: finish everything; with an engine per target, nothing may be left hanging
    for e in engines:
        if e not in live:
            live.append(e)
            apply(s.add_engine(e, now))
    for _ in range(10_000):
        busy = [(e, m) for e in live for m in sorted(s.tasks_on(e))]
        if not busy:
            break
        e, m = busy[0]
        result = s.finished(e, m, True, now)
        if result.deliver:
            answered[m] = answered.get(m, 0) + 1
        apply(result.instructions)
    assert s.queued == 0, "tasks left waiting with free engines"
    assert set(answered) == set(submitted)
    assert all(n == 1 for n in answered.values())


# ---- the ready queue --------------------------------------------------------------------------


def test_ready_queue_groups_by_constraints_in_submission_order():
    from controller.scheduling.ready import Entry, ReadyQueue

    q = ReadyQueue()
    e = {i: Entry(task(f"t{i}"), i, 0, None if i % 2 else frozenset({A})) for i in range(1, 6)}
    for i in (3, 1, 4, 5, 2):
        q.push(e[i])
    q.push(e[1])  # already there: no-op
    assert len(q) == 5 and "t1" in q
    heads = dict(q.heads())
    assert heads[None] is e[1]
    assert heads[(frozenset({A}), None, frozenset(), frozenset())] is e[2]
    assert [x.seq for x in q.groups[None].values()] == [1, 3, 5]
    assert q.remove(e[1]) and not q.remove(e[1])
    assert dict(q.heads())[None] is e[3]
    for i in (2, 4):
        q.remove(e[i])
    assert list(q.groups) == [None]


# ---- engine deaths: blame, max_engine_deaths, tasks killed on purpose --------------------------


def test_engine_death_error_names_the_reason_the_task_and_the_engine():
    s = sched(A)
    s.submit(task("t"), 0)
    out = s.remove_engine(A, 1, reason="engine 0 (pid 12) exited with signal SIGKILL", died=True)
    (f,) = [i for i in out if isinstance(i, Fail)]
    assert f.ename == "EngineDied" and f.engine == A
    assert "engine 0 (pid 12) exited with signal SIGKILL" in f.evalue and "task t" in f.evalue


def test_task_that_kills_max_engine_deaths_engines_fails_instead_of_retrying():
    s = sched(A, B, C, max_engine_deaths=3)
    s.submit(task("bomb", retries=10), 0)
    for n in range(2):
        engine = s.engine_of("bomb")
        out = s.remove_engine(engine, n, died=True, running="bomb")
        assert fails(out) == {} and s.engine_of("bomb") is not None  # retried on another engine
        s.add_engine(engine + b"'", n)  # a replacement engine keeps the cluster at three
    engine = s.engine_of("bomb")
    out = s.remove_engine(engine, 5, died=True, running="bomb")
    assert fails(out) == {"bomb": "TaskKilledEngines"}
    (f,) = [i for i in out if isinstance(i, Fail)]
    assert "3 engines" in f.evalue and "max_engine_deaths=3" in f.evalue
    assert s.outcome("bomb") is False


def test_only_the_running_task_is_blamed_for_a_death():
    s = sched(A, B, max_engine_deaths=1, hwm=0)
    for m in ("t1", "t2", "t3", "t4"):
        s.submit(task(m, retries=1), 0)
    on_a = sorted(s.tasks_on(A))
    running, queued = on_a[0], on_a[1]
    out = s.remove_engine(A, 1, died=True, running=queued)
    # the task the supervisor saw running is blamed; the other one is merely retried
    assert fails(out) == {queued: "TaskKilledEngines"}
    assert s.engine_of(running) == B


def test_without_a_running_report_the_oldest_assigned_task_is_blamed():
    s = sched(A, max_engine_deaths=1)
    s.submit(task("first", retries=2), 0)
    s.submit(task("second", retries=2), 0)
    out = s.remove_engine(A, 1, died=True)
    assert fails(out) == {"first": "TaskKilledEngines"}
    assert s.is_queued("second")


def test_a_clean_unregistration_blames_nobody():
    s = sched(A, B, max_engine_deaths=1)
    s.submit(task("t", retries=1), 0)
    engine = s.engine_of("t")
    assert fails(s.remove_engine(engine, 1)) == {}
    assert s.engine_of("t") not in (None, engine)


def test_max_engine_deaths_zero_means_no_limit():
    s = sched(A, B, max_engine_deaths=0)
    s.submit(task("t", retries=50), 0)
    for n in range(20):
        engine = s.engine_of("t")
        assert fails(s.remove_engine(engine, n, died=True, running="t")) == {}
        s.add_engine(engine, n)
    with pytest.raises(ValueError):
        TaskScheduler(max_engine_deaths=-1)


def test_killed_tasks_fail_with_their_own_error_and_are_not_retried():
    s = sched(A, B, max_engine_deaths=1)
    s.submit(task("slow", retries=3), 0)
    s.submit(task("other", retries=1), 0)
    s.submit(task("third", retries=1), 0)
    engine = s.engine_of("slow")
    innocent = [m for m in s.tasks_on(engine) if m != "slow"]
    out = s.remove_engine(engine, 1, died=True, running="slow",
                          killed={"slow": ("TaskTimeout", "task slow ran longer than its time limit")})
    assert fails(out) == {"slow": "TaskTimeout"}
    for m in innocent:  # queued behind it: retried elsewhere, never blamed
        assert s.engine_of(m) not in (None, engine) or s.is_queued(m)
