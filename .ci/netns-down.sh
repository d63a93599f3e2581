#!/bin/bash
# Remove what netns-up.sh made: each host's sshd and anything still running in its namespace, the
# namespaces, their veth links and the bridge.  Safe to run when nothing is up.
. "$(dirname "$0")/proc-lib.sh"
n=${NHOSTS:-2}
dir=${SSHD_DIR:-/tmp/ci-sshd}
for i in $(seq 1 "$n"); do
  ns=ipp-h$i
  end_tree_from_file "$dir/sshd-$ns.pid"
  for p in $(ip netns pids "$ns" 2>/dev/null); do end_pid "$p" 5; done
  ip netns del "$ns" 2>/dev/null || true
  ip link del "veth-h$i" 2>/dev/null || true
done
ip link del br-ipp 2>/dev/null || true
