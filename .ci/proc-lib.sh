# Process helpers for the CI scripts (source this file).
# PID 1 on the CI machine reaps orphans lazily, so a zombie counts as gone.

# is_running PID: the process exists and is not a zombie
is_running() {
  [ -n "${1:-}" ] && [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# end_pid PID [SECONDS]: SIGTERM, wait up to SECONDS (default 10) for it to go, then SIGKILL
end_pid() {
  local pid=${1:-} limit=${2:-10} i
  is_running "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < limit * 10; i++)); do is_running "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  return 0
}

# all_below PID: every descendant of PID, parents before their children
all_below() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$child"; all_below "$child"; done
}

# end_tree PID: end PID and then whatever it had started (an sshd listener's sessions and their commands)
end_tree() {
  local pid=${1:-} p below
  is_running "$pid" || return 0
  below=$(all_below "$pid")
  end_pid "$pid" "${2:-10}"
  for p in $below; do end_pid "$p" 5; done
}

# end_tree_from_file FILE: end_tree on the pid stored in FILE, then remove FILE
end_tree_from_file() {
  [ -s "$1" ] && end_tree "$(cat "$1")" "${2:-10}"
  rm -f "$1"
}
