#!/bin/bash
# Start a one-node (Son of) Grid Engine: sge_qmaster + sge_execd on "localhost", queue all.q with
# SGE_SLOTS slots (default 8), parallel environment "smp", jobs by root allowed, 1 s scheduling.
# Installs the Debian packages (preseeded) when missing.  Clients need SGE_ROOT and SGE_CELL.
set -euo pipefail
. "$(dirname "$0")/pidlib.sh"
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
if ! command -v sge_qmaster >/dev/null; then
  # without a preseeded master name the package leaves act_qmaster empty
  for answer in "shared/gridenginemaster string localhost" "shared/gridengineconfig boolean true" \
                "shared/gridenginecell string default"; do
    echo "gridengine-common $answer" | debconf-set-selections
  done
  apt-get install -y -q --no-install-recommends gridengine-master gridengine-exec gridengine-client >/dev/null
fi
common=$SGE_ROOT/$SGE_CELL/common
# 127.0.0.1 resolves back to "localhost" while the tools call this host $(hostname): alias them,
# or qmaster refuses the clients ("access denied ... not identical to clients host name")
echo "localhost $(hostname)" > "$common/host_aliases"
echo localhost > "$common/act_qmaster"
install -d -o sgeadmin -g sgeadmin /run/gridengine /var/spool/gridengine/execd
is_running "$(cat /var/spool/gridengine/qmaster/qmaster.pid 2>/dev/null)" || /usr/sbin/sge_qmaster </dev/null
wait_until 30 qstat || { echo "sge_qmaster did not answer" >&2; exit 1; }

# qconf -m* edits only through $EDITOR: small sed scripts play the editor
edits=$(mktemp -d)
trap 'rm -rf "$edits"' EXIT
editor() { printf '#!/bin/sh\nsed -i %s "$1"\n' "$2" > "$edits/$1"; chmod +x "$edits/$1"; }
editor global "-e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/'"
editor sched "-e 's/^schedule_interval .*/schedule_interval 0:0:1/' -e 's/^flush_submit_sec .*/flush_submit_sec 1/' -e 's/^flush_finish_sec .*/flush_finish_sec 1/'"
# load_thresholds NONE: a busy machine must not put the queue in alarm state (jobs would wait forever)
editor queue "-e 's/^hostlist .*/hostlist localhost/' -e 's/^slots .*/slots ${SGE_SLOTS:-8}/' -e 's#^shell .*#shell /bin/bash#' -e 's/^pe_list .*/pe_list smp/' -e 's/^load_thresholds .*/load_thresholds NONE/'"
EDITOR=$edits/global qconf -mconf global >/dev/null 2>&1
EDITOR=$edits/sched qconf -msconf >/dev/null 2>&1
qconf -as localhost >/dev/null 2>&1 || true
if ! qconf -sel 2>/dev/null | grep -qx localhost; then
  printf '%s\n' "hostname localhost" "load_scaling NONE" "complex_values NONE" "user_lists NONE" \
    "xuser_lists NONE" "projects NONE" "xprojects NONE" "usage_scaling NONE" "report_variables NONE" > "$edits/exec"
  qconf -Ae "$edits/exec" >/dev/null
fi
if ! qconf -spl 2>/dev/null | grep -qx smp; then
  printf '%s\n' "pe_name smp" "slots 999" "user_lists NONE" "xuser_lists NONE" "start_proc_args /bin/true" \
    "stop_proc_args /bin/true" 'allocation_rule $pe_slots' "control_slaves TRUE" "job_is_first_task FALSE" \
    "urgency_slots min" "accounting_summary FALSE" "qsort_args NONE" > "$edits/pe"
  qconf -Ap "$edits/pe" >/dev/null
fi
qconf -sql 2>/dev/null | grep -qx all.q || EDITOR=$edits/queue qconf -aq all.q >/dev/null 2>&1
is_running "$(cat /var/spool/gridengine/execd/localhost/execd.pid 2>/dev/null)" || /usr/sbin/sge_execd </dev/null
queue_ready() { qstat -f 2>/dev/null | grep -Eq '^all\.q@localhost +[A-Z]+ +[0-9]+/[0-9]+/[0-9]+ +[0-9.]+ +lx-amd64 *$'; }
wait_until 30 queue_ready || { echo "SGE queue all.q not ready:" >&2; qstat -f >&2 || true; exit 1; }
echo "sge up: queue all.q@localhost, ${SGE_SLOTS:-8} slots"
