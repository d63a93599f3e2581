"""Message types, by socket role.  ``docs/protocol.md`` describes each one's content.

Names are snake_case ``*_request`` / ``*_reply`` / ``*_notification``; output messages that mirror
Jupyter's iopub (``stream``, ``display_data``, ``execute_result``, ``error``) keep Jupyter's names.
"""

from __future__ import annotations

# hub socket (client/supervisor DEALER <-> controller ROUTER)
CONNECTION_REQUEST = "connection_request"
CONNECTION_REPLY = "connection_reply"
QUEUE_STATUS_REQUEST = "queue_status_request"
QUEUE_STATUS_REPLY = "queue_status_reply"
CONTROLLER_SHUTDOWN_REQUEST = "controller_shutdown_request"
CONTROLLER_SHUTDOWN_REPLY = "controller_shutdown_reply"
#: Diagnostics: sizes of the controller's structures, refused-message counts, broken invariants.
CONTROLLER_STATE_REQUEST = "controller_state_request"
CONTROLLER_STATE_REPLY = "controller_state_reply"
DISCONNECT_NOTIFICATION = "disconnect_notification"
TASK_OUTCOME_NOTIFICATION = "task_outcome_notification"
# task records (only of requests that went through the controller)
HISTORY_REQUEST = "history_request"
HISTORY_REPLY = "history_reply"
DB_QUERY_REQUEST = "db_query_request"
DB_QUERY_REPLY = "db_query_reply"
RESULT_REQUEST = "result_request"
RESULT_REPLY = "result_reply"
#: To a client that asked with ``"wait": true``: a pending result has completed (hub socket).
RESULT_NOTIFICATION = "result_notification"
# sent on the mux route to SCHEDULER, so it follows the tasks it names
TASK_ABORT_REQUEST = "task_abort_request"
TASK_ABORT_REPLY = "task_abort_reply"
ENGINE_DIED_NOTIFICATION = "engine_died_notification"
#: Client -> controller: stop these requests if they are running (``{"tasks": {msg_id: engine uuid}}``);
#: the controller passes them on to each engine's supervisor as ``task_interrupt_request``.
TASK_CANCEL_REQUEST = "task_cancel_request"
TASK_CANCEL_REPLY = "task_cancel_reply"
#: Controller -> engine-host supervisor (hub socket): interrupt, then kill and restart, the engine
#: *uuid* if it is running one of *msg_ids* (``{"uuid", "msg_ids", "reason": "cancel"}``).
TASK_INTERRUPT_REQUEST = "task_interrupt_request"
#: The answer of an engine without a supervisor, which gets ``task_interrupt_request`` on control.
TASK_INTERRUPT_REPLY = "task_interrupt_reply"
ENGINE_REGISTERED_NOTIFICATION = "engine_registered_notification"
ENGINE_UNREGISTERED_NOTIFICATION = "engine_unregistered_notification"
CONTROLLER_SHUTDOWN_NOTIFICATION = "controller_shutdown_notification"

# mux (client -> controller -> engine, and back)
APPLY_REQUEST = "apply_request"
APPLY_REPLY = "apply_reply"
EXECUTE_REQUEST = "execute_request"
EXECUTE_REPLY = "execute_reply"
ENGINE_READY_NOTIFICATION = "engine_ready_notification"
ENGINE_STATUS_NOTIFICATION = "engine_status_notification"

# output, sent by an engine to the requesting client before the reply, teed on iopub
STREAM = "stream"
DISPLAY_DATA = "display_data"
EXECUTE_RESULT = "execute_result"
ERROR = "error"
OUTPUT_TYPES = frozenset({STREAM, DISPLAY_DATA, EXECUTE_RESULT, ERROR})

# control (client -> controller -> engine control thread, and back)
ABORT_REQUEST = "abort_request"
ABORT_REPLY = "abort_reply"
CLEAR_REQUEST = "clear_request"
CLEAR_REPLY = "clear_reply"
SHUTDOWN_REQUEST = "shutdown_request"
SHUTDOWN_REPLY = "shutdown_reply"
SIGNAL_REQUEST = "signal_request"
SIGNAL_REPLY = "signal_reply"
REGISTRATION_REQUEST = "registration_request"
REGISTRATION_REPLY = "registration_reply"
UNREGISTRATION_NOTIFICATION = "unregistration_notification"
#: controller -> engine (control): "you are not registered here (any more): register again"
REREGISTRATION_NOTIFICATION = "reregistration_notification"
#: controller -> clients (hub): nothing to do; sent after a hub connection dropped, to find clients
#: that are gone (a send to one fails) and free what the controller kept for them
CLIENT_PROBE_NOTIFICATION = "client_probe_notification"

REPLY_FOR = {
    APPLY_REQUEST: APPLY_REPLY,
    EXECUTE_REQUEST: EXECUTE_REPLY,
    ABORT_REQUEST: ABORT_REPLY,
    TASK_ABORT_REQUEST: TASK_ABORT_REPLY,
    TASK_CANCEL_REQUEST: TASK_CANCEL_REPLY,
    TASK_INTERRUPT_REQUEST: TASK_INTERRUPT_REPLY,
    CLEAR_REQUEST: CLEAR_REPLY,
    SHUTDOWN_REQUEST: SHUTDOWN_REPLY,
    SIGNAL_REQUEST: SIGNAL_REPLY,
}

#: Routing id a client puts first to send a task to the controller's scheduler instead of a named
#: engine (engine ids are 32 hex digits, so it cannot collide with one).
SCHEDULER = b"scheduler"

#: Routing id a client puts first to send one request to several engines: the controller forwards
#: it to each engine its metadata's ``targets`` names (see ``docs/protocol.md``).
BROADCAST = b"broadcast"

#: The controller's one answer to a broadcast sent with ``"coalesce": true``: content
#: ``{"parts": [frame counts]}``, buffers = every engine's reply frames (from the delimiter on),
#: each still signed by whoever made it (see ``docs/protocol.md``).
BROADCAST_REPLY = "broadcast_reply"
