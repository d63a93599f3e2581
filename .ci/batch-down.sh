#!/bin/bash
# Stop what batch-up.sh started: cancel leftover jobs first (a running job's slurmstepd or
# sge_shepherd would outlive the daemons), then the daemons, by their pid files.  Idempotent.
. "$(dirname "$0")/pidlib.sh"
export SGE_ROOT=${SGE_ROOT:-/var/lib/gridengine} SGE_CELL=${SGE_CELL:-default}
if is_running "$(cat /run/slurm/slurmctld.pid 2>/dev/null)"; then
  left=$(squeue -h -o %i 2>/dev/null | wc -l)
  [ "$left" = 0 ] || echo "batch-down: cancelling $left leftover Slurm job(s)"
  scancel --user="$(id -un)" 2>/dev/null || true
  no_slurm_jobs() { [ -z "$(squeue -h 2>/dev/null)" ]; }
  wait_until 20 no_slurm_jobs || echo "batch-down: Slurm jobs still listed" >&2
fi
if is_running "$(cat /var/spool/gridengine/qmaster/qmaster.pid 2>/dev/null)"; then
  qdel -u '*' >/dev/null 2>&1 || true
  no_sge_jobs() { [ -z "$(qstat -u '*' 2>/dev/null)" ]; }
  wait_until 20 no_sge_jobs || echo "batch-down: SGE jobs still listed" >&2
fi
end_pidfile /var/spool/gridengine/execd/localhost/execd.pid 30
end_pidfile /var/spool/gridengine/qmaster/qmaster.pid 30
end_pidfile /run/slurm/slurmd.pid
end_pidfile /run/slurm/slurmctld.pid
end_pidfile /run/munge/munged.pid
echo "batch-down: done"
