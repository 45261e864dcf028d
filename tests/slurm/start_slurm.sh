#!/usr/bin/env bash
# Start a real single-node SLURM on this machine: the cluster of the `slurm` test tier
# (tests/slurm_cluster.py, tests/slurm/NOTES.md).
#
#     bash tests/slurm/start_slurm.sh          # prints the state folder on its last line
#     bash tests/slurm/start_slurm.sh --check  # the same if SLURM answers, else exit 3 (starts nothing)
#
# Debian 12, as root (apt-get, munged run as user munge, the daemons run as root). Idempotent:
# what already runs is kept, what is missing is started; if everything answers it says so and
# exits 0. The state (slurm.conf, StateSaveLocation, spool, logs, pid files, the jobcomp file) is in
# ${REPRODUCE_SLURM_STATE:-~/.cache/reproduce-dhn/slurm}. /etc/slurm/slurm.conf is made a link to
# its slurm.conf: sbatch, squeue, scancel and submitit read that default path, so no client needs
# $SLURM_CONF. Stop with tests/slurm/stop_slurm.sh.
#
# The node offers $REPRODUCE_SLURM_CPUS CPUs (default 4) whatever the machine has:
# SlurmdParameters=config_overrides makes slurmd take the node's CPUs from slurm.conf instead of
# draining a node that declares more than it has. 1-CPU jobs are then scheduled 4 at a time on 2
# cores (nothing pins them: TaskPlugin=task/none, no cgroups), which is what a test of a job plan's
# concurrency needs. Memory is consumable (CR_Core_Memory) with the machine's real RealMemory, and
# a job that asks for none gets RealMemory/CPUs per CPU (DefMemPerCPU): without it a job is given
# the whole node's memory and jobs run one at a time (NOTES.md).
set -euo pipefail

state=${REPRODUCE_SLURM_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/reproduce-dhn/slurm}
cpus=${REPRODUCE_SLURM_CPUS:-4}
partition=debug
conf=$state/slurm.conf
etc_conf=/etc/slurm/slurm.conf
marker="# written by reproduce tests/slurm/start_slurm.sh"
munge_pidfile=/run/munge/munged.pid
timeout_s=${REPRODUCE_SLURM_START_TIMEOUT:-60}

fail() { echo "start_slurm: $*" >&2; exit 1; }
say() { echo "start_slurm: $*" >&2; }

# alive PIDFILE NAME: the pid file names a live process whose command is NAME (not a reused PID).
alive() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(tr -dc 0-9 < "$1")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
munge_ok() { command -v munge > /dev/null && munge -n 2>/dev/null | unmunge > /dev/null 2>&1; }
# scontrol ping answers and the node is schedulable (idle, mixed or allocated).
slurm_ok() {
  [ -L "$etc_conf" ] && [ "$(readlink "$etc_conf")" = "$conf" ] || return 1
  alive "$state/ctld.pid" slurmctld && alive "$state/d.pid" slurmd || return 1
  timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
  timeout 10 sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'
}

if munge_ok && slurm_ok; then
  say "already running (state folder below)"
  echo "$state"
  exit 0
fi
[ "${1:-}" = "--check" ] && exit 3   # --check: print the folder if SLURM answers, else exit 3
[ "$(id -u)" = 0 ] || fail "run as root: it installs Debian packages and starts munged, slurmctld and slurmd"
mkdir -p "$state/state" "$state/spool" "$state/log"

# ---- 1. Debian packages --------------------------------------------------------------------------
missing=""
for p in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "installing Debian packages:$missing (log: $state/log/apt.log)"
  # shellcheck disable=SC2086  # $missing is a list of package names, split on purpose
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $missing; } > "$state/log/apt.log" 2>&1 \
    || fail "apt-get could not install:$missing (log: $state/log/apt.log)"
fi

# ---- 2. munge: a key, its folders owned by munge, munged run as munge (no --force needed) ---------
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge_ok; then
  # A munged that answers is kept whoever started it; one we start is recorded so that
  # stop_slurm.sh stops only ours.
  runuser -u munge -- munged --pid-file="$munge_pidfile" \
    || fail "munged did not start (log: /var/log/munge/munged.log)"
  for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
  munge_ok || fail "munged does not answer \`munge -n | unmunge\` (log: /var/log/munge/munged.log)"
  cp "$munge_pidfile" "$state/munged.pid"
fi

# ---- 3. slurm.conf in the state folder, linked from /etc/slurm ------------------------------------
host=$(hostname -s)
real_mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n 1)
[ -n "$real_mem" ] || fail "slurmd -C reports no RealMemory"
cat > "$conf.new" <<EOF
$marker; the state folder is $state
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/state
SlurmdSpoolDir=$state/spool
SlurmctldLogFile=$state/log/ctld.log
SlurmdLogFile=$state/log/d.log
SlurmctldPidFile=$state/ctld.pid
SlurmdPidFile=$state/d.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU=$((real_mem / cpus))
ReturnToService=2
# scancel sends SIGTERM, then SIGKILL KillWait seconds later; 5 s instead of the default 30 keeps
# the tier's cancellations short (submitit's job process ignores SIGTERM: NOTES.md).
KillWait=5
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.log
NodeName=$host CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$real_mem State=UNKNOWN
PartitionName=$partition Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
if [ -f "$conf" ] && ! cmp -s "$conf" "$conf.new" \
   && { alive "$state/ctld.pid" slurmctld || alive "$state/d.pid" slurmd; }; then
  rm -f "$conf.new"
  fail "the daemons run with another slurm.conf ($conf): run tests/slurm/stop_slurm.sh first"
fi
mv "$conf.new" "$conf"
mkdir -p /etc/slurm
if [ -e "$etc_conf" ] || [ -L "$etc_conf" ]; then
  # Replace only a link to a slurm.conf this script wrote (another state folder's) or a dangling
  # link; never a configuration someone else wrote.
  if ! { [ -L "$etc_conf" ] && { [ ! -e "$etc_conf" ] || head -n 1 "$etc_conf" | grep -qF "$marker"; }; }; then
    fail "$etc_conf exists and was not written by this script: move it away to use this cluster"
  fi
fi
ln -sfn "$conf" "$etc_conf"

# ---- 4. daemons (both daemonize and write their pid files) ----------------------------------------
if ! alive "$state/ctld.pid" slurmctld; then
  slurmctld -f "$conf" || fail "slurmctld did not start (log: $state/log/ctld.log)"
fi
if ! alive "$state/d.pid" slurmd; then
  slurmd -f "$conf" || fail "slurmd did not start (log: $state/log/d.log)"
fi

# ---- 5. wait until a job step runs ----------------------------------------------------------------
deadline=$((SECONDS + timeout_s))
until out=$(timeout 10 srun -N1 -n1 --immediate=5 hostname 2>/dev/null) && [ "$out" = "$host" ]; do
  [ $SECONDS -lt $deadline ] \
    || fail "srun -N1 -n1 hostname did not answer within ${timeout_s}s (logs: $state/log/ctld.log, $state/log/d.log)"
  sleep 1
done
say "SLURM is running: partition $partition, node $host with $cpus CPUs and $real_mem MB"
echo "$state"
