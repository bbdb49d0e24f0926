#!/bin/sh
# The confined systemd box: run as PID 1 of fresh cgroup, PID and mount namespaces, e.g.
#   unshare --cgroup --pid --mount --fork --mount-proc sh box.sh LAYOUT RUNTIME_DIR XDG_CONFIG_HOME
# LAYOUT is "hybrid" (cgroup v1 name=systemd + cgroup2 under /sys/fs/cgroup/unified) or "v2".
# after the launcher moved itself into its own cgroup directories (see tests/systemd_box/box.py).
# Starts a real systemd-journald and a real `systemd --user` that only see this box.
# Never run it outside those namespaces: systemd would take over the machine's cgroups.
set -eu
LAYOUT=${1:-hybrid}
RUNTIME_DIR=${2:-/run/user/0}
CONFIG_HOME=${3:-}

[ "$$" = 1 ] || { echo "box.sh: must be PID 1 of a new PID namespace" >&2; exit 2; }

# Mounts are private to this namespace.
mount --make-rprivate /
if [ "$LAYOUT" = v2 ]; then
    mount -t cgroup2 none /sys/fs/cgroup
else
    mount -t tmpfs -o mode=755 cgroup-root /sys/fs/cgroup
    mkdir -p /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
    mount -t cgroup -o none,name=systemd none /sys/fs/cgroup/systemd
    mount -t cgroup2 none /sys/fs/cgroup/unified
fi
mount -t tmpfs -o mode=755 run /run
mkdir -p /run/systemd/system /run/log/journal
# Keep the box's journal volatile and private (/run/log/journal): hide the host's /var/log so
# journald never writes into the host's /var/log/journal.
mount -t tmpfs -o mode=755 varlog /var/log
# journald reads /run/systemd/journald.conf.d too: no rate limit in the box (a user manager
# cannot pass a unit's LogRateLimitIntervalSec= to journald; the benchmark writes 20 000 lines/s).
mkdir -p /run/systemd/journald.conf.d
printf '[Journal]\nRateLimitIntervalSec=0\nRuntimeMaxUse=256M\n' > /run/systemd/journald.conf.d/50-llmtop-box.conf
mkdir -p "$RUNTIME_DIR"
chmod 700 "$RUNTIME_DIR"

export XDG_RUNTIME_DIR="$RUNTIME_DIR"
if [ -n "$CONFIG_HOME" ]; then export XDG_CONFIG_HOME="$CONFIG_HOME"; fi
unset DBUS_SESSION_BUS_ADDRESS

/lib/systemd/systemd-journald &
# Wait for journald's socket so the manager's own messages land in the journal.
i=0
while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
/lib/systemd/systemd --user &
echo "box: journald and systemd --user started" >&2
wait
