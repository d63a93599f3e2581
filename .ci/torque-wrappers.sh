#!/bin/bash
# Unpack Slurm's Torque/PBS wrappers (qsub, qstat, qdel ... over Slurm) into $TORQUE_DIR
# (default /opt/slurm-torque/usr/bin) instead of installing the package: slurm-wlm-torque and
# gridengine-client both own /usr/bin/qsub, and apt removes one to install the other.  The PBS
# tests put $TORQUE_DIR first on PATH; everything else keeps Grid Engine's qsub.
set -euo pipefail
dir=${TORQUE_DIR:-/opt/slurm-torque/usr/bin}
root=${dir%/usr/bin}
if [ ! -x "$dir/qsub" ]; then
  # the wrappers are Perl scripts using Slurm's Perl bindings
  apt-get install -y -q --no-install-recommends libslurm-perl libslurmdb-perl libswitch-perl >/dev/null
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  chmod 755 "$tmp"  # apt-get download runs as _apt
  (cd "$tmp" && apt-get download -q slurm-wlm-torque >/dev/null 2>&1)
  dpkg-deb -x "$tmp"/slurm-wlm-torque_*.deb "$root"
fi
# the wrappers run sbatch, scancel ... from their own directory
for tool in sbatch salloc srun scancel scontrol squeue sinfo; do
  ln -sf "$(command -v $tool)" "$dir/$tool"
done
echo "torque wrappers in $dir"
