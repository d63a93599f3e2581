# Process helpers for the CI daemon scripts (source this file).
# PID 1 on the CI machine reaps orphans lazily, so a zombie counts as gone.

# is_running PID: the process exists and is not a zombie
is_running() {
  [ -n "${1:-}" ] && [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# end_pid PID [SECONDS]: SIGTERM, wait up to SECONDS (default 15) for it to go, then SIGKILL
end_pid() {
  local pid=${1:-} limit=${2:-15} i
  is_running "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < limit * 10; i++)); do
    is_running "$pid" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# end_pidfile FILE [SECONDS]: end_pid on the pid stored in FILE, then remove FILE
end_pidfile() {
  [ -s "$1" ] && end_pid "$(cat "$1")" "${2:-15}"
  rm -f "$1"
}

# wait_until SECONDS COMMAND...: run COMMAND every 0.2 s until it succeeds; fail after SECONDS
wait_until() {
  local limit=$1 i
  shift
  for ((i = 0; i < limit * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}
