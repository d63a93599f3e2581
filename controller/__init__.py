"""The ipcluster controller process (started as a subprocess; user code never imports it).

Sockets (all bound here; engines and clients connect) and the path of a direct request::

    client DEALER ──▶ mux_front ROUTER ─┐ swap idents, note msg_id   ┌─▶ mux_back ROUTER ──▶ engine DEALER
                                        └──────── Router ───────────┘        (uuid identity)
    client DEALER ◀── mux_front ROUTER ◀─ swap back, note reply ◀──── mux_back ROUTER ◀── reply / output
                                              └─ output copied to ─▶ iopub PUB ──▶ any client SUB

    control_front / control_back   the same route for abort, clear, signal, shutdown, registration
    hub ROUTER                      connection, queue_status, shutdown, supervisors' death reports,
                                    notifications pushed to clients (engine registered/unregistered)
    hb_ping PUB ──▶ engine (libzmq proxy, no GIL) ──▶ hb_pong ROUTER     liveness

A request is forwarded as the frames it arrived in (never unpickled, never copied); the controller
reads only JSON headers to keep its per-engine queue bookkeeping.  When an engine dies (reported by
its host supervisor at once, or by missed heartbeats), every request it owed is answered with an
``EngineDied`` error so no client waits forever.

Modules: ``app`` (configuration, binding, loop), ``router`` (mux/control forwarding), ``hub``
(registration, queries, notifications), ``registry`` (pure engine/task state), ``heartbeat``.
"""
