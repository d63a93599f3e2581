"""The ipcluster engine process: a long-lived Python namespace that runs tasks for clients.

Started as ``python -P -m engines --file CONNECTION_FILE`` (one engine) or ``... -n N`` (an
engine-host supervisor that forks N engines, see :mod:`engines.supervisor`).  It imports
``ipcluster.protocol`` and ``ipcluster.errors`` only; the controller and the client are other
processes.

Sockets (all connect to the controller; addresses from the connection file)::

    controller                      engine
    mux_back     ROUTER  <------->  DEALER  id=uuid   main thread      apply/execute, output, replies
    control_back ROUTER  <------->  DEALER  id=uuid   control thread   registration, abort/clear/
                                                                       signal/shutdown
    hb_ping      PUB     -------->  SUB   \\
                                           zmq.proxy  heartbeat thread  echo in C, GIL released
    hb_pong      ROUTER  <--------  DEALER/  id=uuid
                                    PAIR inproc "wake"  control -> main: clear, stop

Threads:

* **main** — registers, then serves mux: one request at a time, received zero-copy, checked by the
  session before anything is unpickled, dispatched through ``{"apply_request": ...,
  "execute_request": ...}``.  Output (``stream``, ``display_data``, ``execute_result``, ``error``)
  goes to the requesting client on the same route as the reply, flushed *before* the reply.
* **control** — abort, clear, signal and shutdown while a task runs (:mod:`engines.control`).
* **heartbeat** — a libzmq proxy echoing pings (:mod:`engines.heartbeat`).

Modules: ``engine`` (sockets, registration, main loop), ``execution`` (apply/execute, namespace),
``shell`` (IPython, imported on first execute), ``output`` (stdout/stderr capture),
``error_content`` (exceptions to protocol errors), ``control``, ``heartbeat``, ``supervisor``,
``logs``, and ``__main__`` (the command line).
"""
