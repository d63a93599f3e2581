#!/bin/bash
# Stop the sshd that sshd-up.sh started, and every session (and command) it still serves.
. "$(dirname "$0")/proc-lib.sh"
end_tree_from_file "${SSHD_DIR:-/tmp/ci-sshd}/sshd.pid"
