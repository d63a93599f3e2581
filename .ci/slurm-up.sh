#!/bin/bash
# Start a one-node Slurm cluster on 127.0.0.1: munged, slurmctld, slurmd (no systemd, no cgroups).
# Jobs submitted by root run as root.  The node advertises SLURM_CPUS CPUs (default 8, more than
# the machine has, so a controller job and a few engine jobs fit at once).  Idempotent.
set -euo pipefail
. "$(dirname "$0")/pidlib.sh"
command -v slurmctld >/dev/null ||
  apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
node=$(hostname -s)
cpus=${SLURM_CPUS:-8}

# munge: the Debian package generated /etc/munge/munge.key; munged must run as user munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge /var/log/munge /var/lib/munge
is_running "$(cat /run/munge/munged.pid 2>/dev/null)" || runuser -u munge -- /usr/sbin/munged </dev/null
wait_until 10 sh -c 'munge -n </dev/null | unmunge' || { echo "munged did not come up" >&2; exit 1; }

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
# proctrack/linuxproc + task/none: the cgroup plugins fail in this VM (jobs die, the node drains)
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# -c: start without saved state (no drained node or stale jobs from an earlier run)
is_running "$(cat /run/slurm/slurmctld.pid 2>/dev/null)" || slurmctld -c </dev/null
is_running "$(cat /run/slurm/slurmd.pid 2>/dev/null)" || slurmd </dev/null
node_idle() { [ "$(sinfo -h -N -o %T 2>/dev/null | head -1)" = idle ]; }
wait_until 30 node_idle || { echo "Slurm node not idle:" >&2; sinfo >&2 || true; exit 1; }
echo "slurm up: node $node, $cpus CPUs"
