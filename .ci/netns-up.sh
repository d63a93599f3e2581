#!/bin/bash
# Simulated hosts for the multi-host tests: network namespaces ipp-h1..ipp-hN, each with its own
# network and UTS namespace (hostname h1..hN), address 10.200.0.(i+1)/24 on the bridge br-ipp and its
# own sshd on port 22.  This namespace is 10.200.0.1 on the bridge.  Files, users and pids are shared,
# like hosts with a shared home directory.  Run sshd-up.sh first: its key and configuration are reused.
set -euo pipefail
n=${NHOSTS:-2}
dir=${SSHD_DIR:-/tmp/ci-sshd}
[ -f "$dir/sshd_config" ] || { echo "netns-up.sh: run sshd-up.sh first" >&2; exit 1; }
ip link show br-ipp >/dev/null 2>&1 || {
  ip link add br-ipp type bridge
  ip addr add 10.200.0.1/24 dev br-ipp
}
ip link set br-ipp up
for i in $(seq 1 "$n"); do
  ns=ipp-h$i
  addr=10.200.0.$((i + 1))
  if ! ip netns list | grep -qw "$ns"; then
    ip netns add "$ns"
    ip link add "veth-h$i" type veth peer name eth0 netns "$ns"
    ip link set "veth-h$i" master br-ipp up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up                  # the namespace's own loopback
    ip -n "$ns" route add default via 10.200.0.1
  fi
  pidfile=$dir/sshd-$ns.pid
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then continue; fi
  sed -e "s/^Port .*/Port 22/" -e "s/^ListenAddress .*/ListenAddress $addr/" \
      -e "s#^PidFile .*#PidFile $pidfile#" "$dir/sshd_config" > "$dir/sshd_config.$ns"
  ip netns exec "$ns" unshare --uts sh -c \
      "hostname h$i && exec /usr/sbin/sshd -f '$dir/sshd_config.$ns' -E '$dir/sshd-$ns.log'" </dev/null
  for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
  echo "host h$i: namespace $ns, $addr, sshd pid $(cat "$pidfile")"
done
