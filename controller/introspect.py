"""What the controller holds, and whether its bookkeeping agrees with itself (``controller_state``).

Answers ``controller_state_request`` on the hub socket: the size of every per-task and per-client
structure (so a long run can show they stay bounded), the counts of refused messages by route and
reason, and a list of broken invariants — empty when all is well:

* no request is both pending (on an engine or in the scheduler) and completed in the records;
* every task the scheduler has sent to an engine is on a registered, ready engine, and that
  engine's pending requests include it;
* the scheduler's engines are exactly the ready registered ones, and its tasks are exactly the
  ones whose frames the task server keeps.

This is a diagnostic read of several modules' internals, done in one place on purpose: nothing
here runs on the message path, only when asked.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from typing import TYPE_CHECKING, Any

from controller.memory import trim_heap

if TYPE_CHECKING:  # pragma: no cover
    from controller.hub import Hub

#: Violations reported at most (the first ones found); the reply stays small whatever went wrong.
MAX_VIOLATIONS = 50


def sizes(hub: "Hub") -> dict[str, int]:
    """Element counts of the controller's growing structures."""
    records = hub.records
    out: dict[str, int] = {
        "engines": len(hub.registry),
        "pending_requests": sum(len(rec.pending) for rec in hub.registry),
        "clients": len(hub.clients),
        "records": len(records),
        "records_completed": len(records._done),
        "kept_replies": len(records._replies),
        "kept_reply_bytes": int(records.result_bytes),
        "result_watches": len(hub.watches),
        "coalescing_broadcasts": len(hub.mux.coalescer),
        "heartbeat_watched": len(list(hub.monitor.watched)),
        "drop_kinds": len(hub.drops.counts),
    }
    out.update({f"replay_guard_{k}": v for k, v in hub.session.guard_sizes().items()})
    tasks = hub.tasks
    if tasks is not None:
        sched = tasks.scheduler
        out.update({
            "task_frames": len(tasks.tasks),
            "scheduler_tasks": len(sched._tasks),
            "scheduler_waiting": len(sched._waiting),
            "scheduler_ready": len(sched._ready),
            "scheduler_dependents": len(sched._dependents),
            "scheduler_external": len(sched._external),
            "scheduler_deadlines": len(sched._deadlines),
            "scheduler_outcomes": len(sched._outcomes),
            "scheduler_gone_engines": len(sched._gone),
        })
    return out


def violations(hub: "Hub") -> list[str]:
    """Broken invariants (see the module docstring), at most :data:`MAX_VIOLATIONS`."""
    found: list[str] = []

    def bad(text: str) -> bool:
        found.append(text)
        return len(found) >= MAX_VIOLATIONS

    records = hub.records
    ready = {rec.uuid: rec for rec in hub.registry if rec.ready}
    for rec in hub.registry:
        for msg_id in rec.pending:
            r = records.get(msg_id)
            if r is not None and r.completed is not None and bad(
                    f"{msg_id} is pending on engine {rec.id} but completed ({r.status})"):
                return found
    tasks = hub.tasks
    if tasks is None:
        return found
    sched = tasks.scheduler
    if set(sched._engines) != set(ready):
        missing = [u.decode("ascii", "replace") for u in set(ready) - set(sched._engines)]
        extra = [u.decode("ascii", "replace") for u in set(sched._engines) - set(ready)]
        if bad(f"scheduler engines differ from ready engines: missing {missing[:5]}, extra {extra[:5]}"):
            return found
    if set(sched._tasks) != set(tasks.tasks):
        only_sched = sorted(set(sched._tasks) - set(tasks.tasks))[:5]
        only_frames = sorted(set(tasks.tasks) - set(sched._tasks))[:5]
        if bad(f"scheduler tasks differ from kept task frames: only scheduled {only_sched}, "
               f"only kept {only_frames}"):
            return found
    for msg_id, entry in sched._tasks.items():
        r = records.get(msg_id)
        if r is not None and r.completed is not None and bad(
                f"{msg_id} is in the scheduler but completed ({r.status})"):
            return found
        engine = entry.engine
        if engine is None:
            continue
        owner = ready.get(engine)
        if owner is None:
            if bad(f"{msg_id} is assigned to engine {engine!r}, which is not a ready registered engine"):
                return found
        elif msg_id not in owner.pending and bad(f"{msg_id} is assigned to engine {owner.id} but not pending there"):
            return found
    for engine, eng in sched._engines.items():
        for msg_id in eng.tasks:
            entry = sched._tasks.get(msg_id)
            if (entry is None or entry.engine != engine) and bad(
                    f"engine {engine!r} lists {msg_id} as assigned, but the task says otherwise"):
                return found
    return found


def dropped(hub: "Hub") -> dict[str, Any]:
    """Refused messages: ``{"route": {"reason": count}}``, the session's totals by check, and the
    count of messages whose handler raised, by socket."""
    by_route: dict[str, dict[str, int]] = {}
    for (route, reason), n in hub.drops.counts.items():
        by_route.setdefault(route, {})[reason] = n
    channels = {"hub": hub.hub, "mux_front": hub.mux.front, "mux_back": hub.mux.back,
                "control_front": hub.control.front, "control_back": hub.control.back}
    # handler errors: messages that passed every check and then raised in their handler (a bug)
    errors = {name: ch.handler_errors for name, ch in channels.items() if ch.handler_errors}
    return {"routes": by_route, "session": dict(hub.session.rejected), "handler_errors": errors}


def batches(hub: "Hub") -> dict[str, int]:
    """Batches on the mux route (``ipcluster.protocol.batch``): received from clients (and the parts
    they held) and from engines, sent to engines and to clients (and their parts)."""
    mux = hub.mux
    return {"received": mux.batches_received, "parts_received": mux.batch_parts_received,
            "from_engines": mux.engine_batches_received,
            "to_engines": mux.to_engines.batches_sent, "parts_to_engines": mux.to_engines.parts_sent,
            "to_clients": mux.to_client.batches_sent, "parts_to_clients": mux.to_client.parts_sent}


def object_counts(top: int = 25) -> dict[str, int]:
    """The most numerous types among the objects the garbage collector tracks (finding leaks)."""
    counts = Counter(type(o).__name__ for o in gc.get_objects())
    return dict(counts.most_common(top))


def controller_state(hub: "Hub", verbose: bool = False, objects: bool = False) -> dict[str, Any]:
    """The content of a ``controller_state_reply``.  With *objects*, cyclic garbage is collected
    first (the controller collects it rarely, see ``controller.app.tune_gc``), so the counts and the
    process's memory show what is really kept."""
    collected = gc.collect() if objects else None
    if objects:
        trim_heap()  # so that the process's memory shows what is in use
    state: dict[str, Any] = {"status": "ok", "sizes": sizes(hub), "dropped": dropped(hub),
                             "violations": violations(hub), "batches": batches(hub)}
    if verbose:
        state["pending"] = {str(rec.id): sorted(rec.pending) for rec in hub.registry}
        if hub.tasks is not None:
            state["scheduled"] = sorted(hub.tasks.tasks)
    if objects:
        state["objects"] = object_counts()
        state["collected"] = collected
        if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC=1 in the controller's environment
            top = tracemalloc.take_snapshot().statistics("lineno")[:15]
            state["allocations"] = {str(stat.traceback[0]): stat.size for stat in top}
    return state


__all__ = ["MAX_VIOLATIONS", "batches", "controller_state", "dropped", "object_counts", "sizes", "violations"]
