#!/bin/bash
# Install and start what the MPI and batch-scheduler launcher tests need: Open MPI + mpi4py,
# a one-node Slurm, a one-node Grid Engine, Slurm's Torque wrappers (for PBS).  LSF and HTCondor
# are tested against fake commands in tests/launchers/shims/ and need nothing here.
# Stop everything again with batch-down.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
t0=$SECONDS
# package scripts must not start daemons with their default configuration
[ -x /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
# Grid Engine asks for its master host while installing
for answer in "shared/gridenginemaster string localhost" "shared/gridengineconfig boolean true" \
              "shared/gridenginecell string default"; do
  echo "gridengine-common $answer" | debconf-set-selections
done
apt-get update -q >/dev/null
# Open MPI before slurmd starts, so Slurm finds its PMIx library
apt-get install -y -q --no-install-recommends openmpi-bin slurmctld slurmd slurm-client munge \
  gridengine-master gridengine-exec gridengine-client >/dev/null
echo "batch-up: packages installed after $((SECONDS - t0)) s"
bash "$here/torque-wrappers.sh"
python -m pip install -q mpi4py  # a binary wheel that finds the system's Open MPI
bash "$here/slurm-up.sh"
bash "$here/sge-up.sh"
echo "batch-up: MPI, Slurm, SGE and the Torque wrappers ready after $((SECONDS - t0)) s"
