"""The task scheduler as a sans-I/O state machine: events in, instructions out, time passed in.

Every event method (:meth:`TaskScheduler.submit`, :meth:`~TaskScheduler.finished`, ...) takes ``now``
and returns a list of instructions — :class:`Assign` (send this task to that engine) or :class:`Fail`
(answer its client with an error) — for a thin socket layer to carry out, in order.

Life of a task::

    submit ──▶ waiting ──(dependencies met)──▶ ready ──(policy picks an engine)──▶ running
                 │                               ▲  │                               │
                 └── impossible / timeout ──▶ Fail  └── timeout / abort ──▶ Fail    ├─ finished ──▶ done
                                                 ▲                                  ├─ failed, retries left ─┐
                                                 └──────── re-queued ◀──────────────┼─ declined ─────────────┤
                                                                                    └─ engine died ──────────┘

Invariants worth knowing:

- Ready tasks are considered in submission order, but a task that cannot run anywhere right now is
  skipped, never blocking the tasks behind it (no head-of-line blocking).
- Every failure (``Fail`` or a failed run) is recorded as a failed outcome, so tasks depending on it
  resolve — usually to ``ImpossibleDependency`` — instead of waiting forever.
- Outcomes of finished tasks live in a bounded LRU (:class:`~.tasks.Outcomes`): memory stays bounded
  in long runs.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .dependencies import Dependency, Status, after_status, follow_status
from .policies import DEFAULT_POLICY, get_policy
from .ready import Entry, ReadyQueue
from .tasks import (
    ENGINE_DIED,
    IMPOSSIBLE_DEPENDENCY,
    INVALID_DEPENDENCY,
    TASK_ABORTED,
    TASK_KILLED_ENGINES,
    TASK_TIMEOUT,
    UNMET_DEPENDENCY,
    Assign,
    Fail,
    Finished,
    Instruction,
    Outcomes,
    Task,
)

__all__ = ["TaskScheduler", "Task", "Assign", "Fail", "Finished", "Instruction"]

_MAX_GONE = 10_000  # removed engine ids remembered (to fail tasks targeting only dead engines)


@dataclass(slots=True)
class _Engine:
    tasks: set[str] = field(default_factory=set)
    last_used: int = -1  # assignment counter value of its latest task; -1 = never


class TaskScheduler:
    """Assigns load-balanced tasks to engines; knows nothing of sockets or clocks.

    Parameters
    ----------
    policy
        name of a policy in :data:`~.policies.POLICIES` (``ValueError`` otherwise).
    hwm
        high-water mark: at most this many tasks assigned to one engine at a time; 0 = unlimited.
    seed
        seed of the policies' random generator, for reproducible choices.
    max_outcomes
        how many finished tasks' outcomes are remembered for dependency checks.
    max_engine_deaths
        a task blamed for this many engine deaths fails with ``TaskKilledEngines`` instead of
        being retried again (0: no limit); see :meth:`remove_engine`.
    """

    def __init__(
        self,
        policy: str = DEFAULT_POLICY,
        hwm: int = 0,
        seed: int | None = None,
        max_outcomes: int = 100_000,
        max_engine_deaths: int = 3,
    ) -> None:
        if hwm < 0:
            raise ValueError(f"hwm must be >= 0 (0 = unlimited), not {hwm}")
        if max_engine_deaths < 0:
            raise ValueError(f"max_engine_deaths must be >= 0 (0 = unlimited), not {max_engine_deaths}")
        self.max_engine_deaths = max_engine_deaths
        self.policy_name = policy
        self._policy = get_policy(policy)
        self.hwm = hwm
        self._rng = random.Random(seed)
        self._outcomes = Outcomes(max_outcomes)
        self._engines: dict[bytes, _Engine] = {}  # registration order
        self._gone: OrderedDict[bytes, None] = OrderedDict()
        self._tasks: dict[str, Entry] = {}  # every unfinished task: waiting, ready or running
        self._waiting: dict[str, Entry] = {}
        self._ready = ReadyQueue()  # dependencies met, waiting for an engine
        self._dependents: dict[str, set[str]] = {}  # unfinished dependency id -> waiting tasks
        self._external: set[str] = set()  # running elsewhere (e.g. DirectView), see record_pending
        self._deadlines: list[tuple[float, int, str]] = []  # heap; stale items skipped lazily
        self._resolved: list[str] = []  # outcomes recorded but not yet propagated to dependents
        self._seq = 0
        self._uses = 0

    # ---- events -------------------------------------------------------------------------------

    def add_engine(self, engine: bytes, now: float) -> list[Instruction]:
        """An engine registered (re-adding a registered engine does nothing)."""
        out: list[Instruction] = []
        if engine in self._engines:
            return out
        self._engines[engine] = _Engine()
        self._gone.pop(engine, None)
        self._schedule(out)
        return out

    def remove_engine(
        self,
        engine: bytes,
        now: float,
        reason: str = "",
        died: bool = False,
        running: str | None = None,
        killed: dict[str, tuple[str, str]] | None = None,
    ) -> list[Instruction]:
        """An engine died or left.

        Each task running there is re-queued if it has retries left (elsewhere), otherwise fails
        with ``EngineDied``.  Queued tasks that can now run nowhere fail too (only dead targets,
        ``follow`` on this engine, declined by every remaining engine).

        *reason* says what happened, for the error (default: "engine <uuid> stopped").  With
        *died* the engine did not leave cleanly and the death is blamed on one task: *running*
        (the msg_id its supervisor saw it run) if given and assigned there, else the task assigned
        there first (engines run their tasks in order).  A task blamed for ``max_engine_deaths``
        deaths fails with ``TaskKilledEngines`` instead of being retried.  *killed* maps msg_ids
        that were killed on purpose (time limit, cancel) to the ``(ename, evalue)`` they fail
        with; they are never retried nor blamed.
        """
        out: list[Instruction] = []
        eng = self._engines.pop(engine, None)
        if eng is None:
            return out
        self._gone[engine] = None
        if len(self._gone) > _MAX_GONE:
            self._gone.popitem(last=False)
        killed = killed or {}
        what = reason or f"engine {engine.decode('ascii', 'replace')} stopped"
        culprit = None
        if died and eng.tasks:
            if running is not None and running in eng.tasks:
                culprit = running
            elif running is None:
                culprit = min(eng.tasks, key=lambda m: self._tasks[m].assigned)
            if culprit in killed:
                culprit = None
        for msg_id in sorted(eng.tasks, key=lambda m: self._tasks[m].seq):
            entry = self._tasks[msg_id]
            if msg_id in killed:
                ename, evalue = killed[msg_id]
                self._fail(entry, ename, evalue, out)
                continue
            if msg_id == culprit:
                entry.deaths += 1
                limit = self.max_engine_deaths
                if limit and entry.deaths >= limit:
                    self._fail(entry, TASK_KILLED_ENGINES,
                               f"task {msg_id} was running on {entry.deaths} engines that died "
                               f"(max_engine_deaths={limit}); it is not retried again: {what}", out)
                    continue
            entry.engine = None
            if entry.retries_left > 0:
                entry.retries_left -= 1
                entry.avoid.add(engine)
                self._requeue(entry, now, out)
            else:
                entry.engine = engine  # so the Fail names it
                self._fail(entry, ENGINE_DIED, f"{what} while running task {msg_id}", out)
        for entry in list(self._waiting.values()):
            if entry.task.follow and entry.task.msg_id in self._waiting:
                self._evaluate(entry, out)
        for entry in self._ready.entries():
            if entry.task.msg_id in self._ready:
                self._recheck_ready(entry, out)
        self._drain(out)
        self._schedule(out)
        return out

    def submit(self, task: Task, now: float) -> list[Instruction]:
        """A client submitted *task*.

        Raises
        ------
        ValueError
            If a task with the same msg_id is already in the scheduler.
        """
        msg_id = task.msg_id
        if msg_id in self._tasks:
            raise ValueError(f"task {msg_id!r} is already in the scheduler")
        out: list[Instruction] = []
        self._seq += 1
        targets = None if task.targets is None else frozenset(task.targets)
        entry = Entry(task, self._seq, max(task.retries, 0), targets)
        self._tasks[msg_id] = entry
        self._external.discard(msg_id)
        if targets is None and task.timeout is None and not task.after and not task.follow:
            # the common task: nothing to check or wait for, ready at once (what _evaluate concludes)
            if not self._ready.by_id and self._engines:
                self._assign_new(entry, out)  # (what _schedule does with it as the only ready task)
                return out
            self._ready.push(entry)
        else:
            problem = self._invalid(task)
            if problem is not None:
                self._fail(entry, INVALID_DEPENDENCY, problem, out)
            elif targets is not None and not targets:
                self._fail(entry, IMPOSSIBLE_DEPENDENCY, "the task's target list is empty", out)
            else:
                self._set_deadline(entry, now)
                self._evaluate(entry, out)
        if self._resolved:
            self._drain(out)
        self._schedule(out)
        return out

    def finished(
        self, engine: bytes, msg_id: str, success: bool, now: float, retryable: bool = True
    ) -> Finished:
        """*engine* replied to *msg_id*; ``success`` is whether the task raised no error.

        A failure with retries left (and ``retryable``) re-queues the task, preferring another
        engine; the reply is then not delivered.  A reply for a task not currently assigned to
        *engine* (e.g. it was re-queued after the engine was presumed dead) is stale: ignored and
        not delivered.  See :class:`~.tasks.Finished`.
        """
        out: list[Instruction] = []
        entry = self._tasks.get(msg_id)
        if entry is None or entry.engine != engine:
            return Finished(out, False)
        self._unassign(entry)
        if not success and retryable and entry.retries_left > 0:
            entry.retries_left -= 1
            entry.avoid.add(engine)
            self._requeue(entry, now, out)
            deliver = False
        else:
            del self._tasks[msg_id]
            self._record(msg_id, success, engine)
            deliver = True
        if self._resolved:
            self._drain(out)
        if self._ready.by_id:  # (else there is nothing to schedule)
            self._schedule(out)
        return Finished(out, deliver)

    def declined(self, engine: bytes, msg_id: str, now: float) -> list[Instruction]:
        """*engine* declined *msg_id* (an ``@require`` / ``@depend`` is unmet there).

        The task never goes back to that engine; it does not use up a retry.  Once every registered
        engine allowed to run it has declined, it fails with ``UnmetDependency``.
        """
        out: list[Instruction] = []
        entry = self._tasks.get(msg_id)
        if entry is None or entry.engine != engine:
            return out
        self._unassign(entry)
        entry.declined.add(engine)
        self._requeue(entry, now, out)
        self._drain(out)
        self._schedule(out)
        return out

    def abort(self, msg_ids: Iterable[str], now: float) -> list[Instruction]:
        """Remove queued tasks: each fails with ``TaskAborted``.

        Running and unknown tasks are not affected.  The result may include ``Assign``: a task
        waiting for a failure (``failure=True``) of an aborted one can become ready.
        """
        out: list[Instruction] = []
        for msg_id in msg_ids:
            entry = self._tasks.get(msg_id)
            if entry is not None and entry.engine is None:
                self._fail(entry, TASK_ABORTED, "the task was aborted before it ran", out)
        self._drain(out)
        self._schedule(out)
        return out

    def tick(self, now: float) -> list[Instruction]:
        """Fail queued tasks whose timeout has passed (``TaskTimeout``)."""
        out: list[Instruction] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, msg_id = heapq.heappop(heap)
            entry = self._tasks.get(msg_id)
            if entry is not None and entry.engine is None and entry.deadline == deadline:
                timeout = entry.task.timeout
                self._fail(entry, TASK_TIMEOUT, f"the task waited more than {timeout} s for an engine", out)
        self._drain(out)
        self._schedule(out)
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work to do, or ``None`` if no queued task has a timeout."""
        heap = self._deadlines
        while heap:
            deadline, _, msg_id = heap[0]
            entry = self._tasks.get(msg_id)
            if entry is not None and entry.engine is None and entry.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def record_outcome(self, msg_id: str, success: bool, engine: bytes | None = None) -> list[Instruction]:
        """Learn that a task the scheduler did not run (e.g. a DirectView task) finished.

        Dependencies may then refer to it; tasks waiting on it are released or failed.
        """
        out: list[Instruction] = []
        if msg_id in self._tasks:
            return out  # ours: its outcome comes through finished()
        self._external.discard(msg_id)
        self._record(msg_id, success, engine)
        self._drain(out)
        self._schedule(out)
        return out

    def record_pending(self, msg_id: str) -> None:
        """Learn that a task the scheduler did not run is in flight, so dependencies may wait on it.

        Its outcome must follow through :meth:`record_outcome`.
        """
        if msg_id not in self._tasks and msg_id not in self._outcomes:
            self._external.add(msg_id)

    # ---- introspection (queue_status) ---------------------------------------------------------

    @property
    def engines(self) -> tuple[bytes, ...]:
        """Registered engines, in registration order."""
        return tuple(self._engines)

    @property
    def queued(self) -> int:
        """Tasks not yet assigned (waiting for dependencies or for an engine)."""
        return len(self._waiting) + len(self._ready)

    def loads(self) -> dict[bytes, int]:
        """Tasks currently assigned to each registered engine."""
        return {e: len(s.tasks) for e, s in self._engines.items()}

    def tasks_on(self, engine: bytes) -> frozenset[str]:
        """msg_ids currently assigned to *engine*."""
        eng = self._engines.get(engine)
        return frozenset(eng.tasks) if eng is not None else frozenset()

    def engine_of(self, msg_id: str) -> bytes | None:
        """The engine running *msg_id*, or ``None`` if it is not running."""
        entry = self._tasks.get(msg_id)
        return None if entry is None else entry.engine

    def is_queued(self, msg_id: str) -> bool:
        """Whether *msg_id* is waiting or ready (not running, not finished)."""
        return msg_id in self._waiting or msg_id in self._ready

    def outcome(self, msg_id: str) -> bool | None:
        """The remembered outcome of a finished task (``True`` = success), or ``None``."""
        return self._outcomes.succeeded.get(msg_id)

    # ---- internals ----------------------------------------------------------------------------

    def _invalid(self, task: Task) -> str | None:
        """Why *task*'s dependencies are invalid, or ``None``."""
        for kind, dep in (("after", task.after), ("follow", task.follow)):
            if not dep:
                continue
            if task.msg_id in dep.msg_ids:
                return f"the task depends on itself ({kind})"
            unknown = [
                m
                for m in dep.msg_ids
                if m not in self._outcomes and m not in self._tasks and m not in self._external
            ]
            if unknown:
                return f"{kind} dependency on unknown task(s): {', '.join(sorted(unknown)[:5])}"
        return None

    def _set_deadline(self, entry: Entry, now: float) -> None:
        timeout = entry.task.timeout
        if timeout is None:
            entry.deadline = None
            return
        entry.deadline = now + max(timeout, 0.0)
        heapq.heappush(self._deadlines, (entry.deadline, entry.seq, entry.task.msg_id))

    def _evaluate(self, entry: Entry, out: list[Instruction]) -> None:
        """Put a queued *entry* where its dependencies say: waiting, ready, or failed."""
        task = entry.task
        succeeded = self._outcomes.succeeded
        after = after_status(task.after, succeeded)
        if after is Status.IMPOSSIBLE:
            self._fail(entry, IMPOSSIBLE_DEPENDENCY, "its 'after' dependency can no longer be met", out)
            return
        follow, where = follow_status(task.follow, succeeded, self._outcomes.locations, self._engines)
        if follow is Status.IMPOSSIBLE:
            self._fail(entry, IMPOSSIBLE_DEPENDENCY, "its 'follow' dependency can no longer be met", out)
            return
        if after is Status.PENDING or follow is Status.PENDING:
            self._ready.remove(entry)
            self._wait(entry, (task.after, task.follow))
            return
        self._unwait(entry)
        entry.follow_engines = where
        if where is not None and entry.targets is not None and not (where & entry.targets):
            self._fail(entry, IMPOSSIBLE_DEPENDENCY, "its 'follow' engines are not among its targets", out)
            return
        self._recheck_ready(entry, out, insert=True)

    def _wait(self, entry: Entry, deps: Iterable[Dependency | None]) -> None:
        msg_id = entry.task.msg_id
        self._waiting[msg_id] = entry
        for dep in deps:
            if not dep:
                continue
            for m in dep.msg_ids:
                if m not in self._outcomes and m not in entry.waiting_on:
                    entry.waiting_on.add(m)
                    self._dependents.setdefault(m, set()).add(msg_id)

    def _unwait(self, entry: Entry) -> None:
        msg_id = entry.task.msg_id
        if self._waiting.pop(msg_id, None) is None:
            return
        for m in entry.waiting_on:
            dependents = self._dependents.get(m)
            if dependents is not None:
                dependents.discard(msg_id)
                if not dependents:
                    del self._dependents[m]
        entry.waiting_on.clear()

    def _recheck_ready(self, entry: Entry, out: list[Instruction], insert: bool = False) -> None:
        """Fail a ready task that can run nowhere any more; otherwise keep (or put) it in ready."""
        if entry.follow_engines is not None and not all(e in self._engines for e in entry.follow_engines):
            # an engine it must follow onto has gone: look again (it may still be met elsewhere)
            self._ready.remove(entry)
            self._evaluate(entry, out)
            return
        targets = entry.targets
        if targets is not None and all(t in self._gone for t in targets):
            self._fail(entry, IMPOSSIBLE_DEPENDENCY, "every engine among its targets has gone", out)
            return
        if entry.declined and not any(entry.allows(e) for e in self._engines):
            n = len(entry.declined)
            self._fail(
                entry, UNMET_DEPENDENCY, f"declined by {n} engine(s); no other engine may run it", out
            )
            return
        if insert:
            self._ready.push(entry)

    def _requeue(self, entry: Entry, now: float, out: list[Instruction]) -> None:
        """Put a task that was running back in the ready queue (its dependencies stay met)."""
        self._set_deadline(entry, now)
        self._recheck_ready(entry, out, insert=True)

    def _unassign(self, entry: Entry) -> None:
        engine = entry.engine
        entry.engine = None
        if engine is not None:
            eng = self._engines.get(engine)
            if eng is not None:
                eng.tasks.discard(entry.task.msg_id)

    def _fail(self, entry: Entry, ename: str, evalue: str, out: list[Instruction]) -> None:
        """Drop *entry* from the scheduler, answer its client, record the failure for dependents."""
        msg_id = entry.task.msg_id
        engine = entry.engine
        self._unassign(entry)
        self._unwait(entry)
        self._ready.remove(entry)
        self._tasks.pop(msg_id, None)
        entry.deadline = None
        out.append(Fail(msg_id, ename, evalue, entry.task.client, engine))
        self._record(msg_id, False, engine)

    def _record(self, msg_id: str, succeeded: bool, engine: bytes | None) -> None:
        self._outcomes.record(msg_id, succeeded, engine)
        if msg_id in self._dependents:
            self._resolved.append(msg_id)

    def _drain(self, out: list[Instruction]) -> None:
        """Re-evaluate tasks waiting on recorded outcomes (iteratively: chains can be long)."""
        resolved = self._resolved
        while resolved:
            dependents = self._dependents.pop(resolved.pop(), None)
            if not dependents:
                continue
            for msg_id in sorted(dependents, key=lambda m: self._tasks[m].seq if m in self._tasks else 0):
                entry = self._waiting.get(msg_id)
                if entry is not None:
                    self._evaluate(entry, out)

    def _assign_new(self, entry: Entry, out: list[Instruction]) -> None:
        """Assign an unconstrained *entry* while no other task is ready, as :meth:`_schedule` would
        with it alone in the ready queue (without putting it there)."""
        hwm = self.hwm
        if hwm:
            free = [(e, s) for e, s in self._engines.items() if len(s.tasks) < hwm]
            if not free:
                self._ready.push(entry)  # waits for room
                return
        else:
            free = list(self._engines.items())
        if len(free) == 1:
            engine, eng = free[0]
        else:
            engine, eng = free[self._policy([len(s.tasks) for _, s in free], self._rng,
                                            [s.last_used for _, s in free])]
        self._uses = uses = self._uses + 1
        eng.last_used = uses
        eng.tasks.add(entry.task.msg_id)
        entry.engine = engine
        entry.assigned = uses
        entry.deadline = None
        out.append(Assign(entry.task.msg_id, engine))

    def _schedule(self, out: list[Instruction]) -> None:
        """Assign ready tasks, in submission order, to engines with room; skip tasks that must wait.

        Each step takes the oldest group head that can run on some engine with room; a group whose
        head cannot run anywhere now is skipped whole (its members share the head's constraints).
        """
        ready = self._ready
        if not ready.by_id or not self._engines:
            return
        hwm = self.hwm
        if hwm:
            free = [(e, s) for e, s in self._engines.items() if len(s.tasks) < hwm]
        else:
            free = list(self._engines.items())
        policy, rng = self._policy, self._rng
        groups = ready.groups
        best: Entry | None
        while free and ready.by_id:
            best_cands: list[tuple[bytes, _Engine]]
            if len(groups) == 1 and None in groups:  # only unconstrained tasks: the oldest, anywhere
                group = groups[None]
                best, best_cands = group[next(iter(group))], free
            else:
                best, best_cands = None, []
                for key, head in ready.heads():
                    if best is not None and head.seq > best.seq:
                        continue
                    cands = free if key is None else self._candidates(head, free)
                    if cands:
                        best, best_cands = head, cands
                if best is None:
                    return  # every ready task must wait for room on an engine it may use
            if len(best_cands) == 1:
                i = 0
            else:
                loads = [len(s.tasks) for _, s in best_cands]
                i = policy(loads, rng, [s.last_used for _, s in best_cands])
            engine, eng = best_cands[i]
            msg_id = best.task.msg_id
            ready.remove(best)
            self._uses = uses = self._uses + 1
            eng.last_used = uses
            eng.tasks.add(msg_id)
            best.engine = engine
            best.assigned = uses
            best.deadline = None
            out.append(Assign(msg_id, engine))
            if hwm and len(eng.tasks) >= hwm:
                free = [c for c in free if c[0] != engine]

    def _candidates(
        self, entry: Entry, free: list[tuple[bytes, _Engine]]
    ) -> list[tuple[bytes, _Engine]]:
        cands = [c for c in free if entry.allows(c[0])]
        if not cands or not entry.avoid:
            return cands
        preferred = [c for c in cands if c[0] not in entry.avoid]
        if preferred:
            return preferred
        # only engines it failed on have room: use them unless another allowed engine exists
        if any(entry.allows(e) and e not in entry.avoid for e in self._engines):
            return []
        return cands
