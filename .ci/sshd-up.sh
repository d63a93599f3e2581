#!/bin/bash
# Start a private OpenSSH server for the SSH launcher tests: ${SSHD_ADDR:-127.0.0.1}:${SSHD_PORT:-2222},
# public-key login only, root included.  It uses its own directory (${SSHD_DIR:-/tmp/ci-sshd}) for the
# host key, configuration, pid file and log, so it never touches /etc/ssh or a system sshd.
# The client key is root's default one (~/.ssh/id_ed25519), so a plain `ssh -p 2222 127.0.0.1` logs in.
set -euo pipefail
[ -x /usr/sbin/sshd ] || apt-get install -y -q --no-install-recommends openssh-server openssh-client >/dev/null
dir=${SSHD_DIR:-/tmp/ci-sshd}
port=${SSHD_PORT:-2222}
addr=${SSHD_ADDR:-127.0.0.1}
mkdir -p "$dir" /run/sshd
chmod 700 "$dir"
chmod 755 /run/sshd            # sshd's privilege-separation directory must exist
[ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519"
mkdir -p ~/.ssh && chmod 700 ~/.ssh
[ -f ~/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519
cp ~/.ssh/id_ed25519.pub "$dir/authorized_keys"
chmod 600 "$dir/authorized_keys"
cat > "$dir/sshd_config" <<CFG
Port $port
ListenAddress $addr
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys .ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# the keys live under /tmp, which StrictModes would refuse
StrictModes no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 100
SetEnv PATH=${SSHD_PATH:-$PATH}
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
CFG
if [ -s "$dir/sshd.pid" ] && kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null; then
  echo "sshd already running (pid $(cat "$dir/sshd.pid"))"
  exit 0
fi
/usr/sbin/sshd -t -f "$dir/sshd_config"
/usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log" </dev/null   # forks into the background
for _ in $(seq 100); do
  [ -s "$dir/sshd.pid" ] && ssh-keyscan -T 1 -p "$port" "$addr" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "sshd pid $(cat "$dir/sshd.pid") on $addr:$port"
