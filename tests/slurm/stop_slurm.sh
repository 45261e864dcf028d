#!/usr/bin/env bash
# Stop the SLURM that tests/slurm/start_slurm.sh started: slurmd, slurmctld, then munged if that
# script started it. Each by the PID in its pid file, never by name (other people's processes share
# this machine). Idempotent: what is not running is skipped. The state folder is kept (a restart
# recovers its jobs); /etc/slurm/slurm.conf stays a link to its slurm.conf.
set -euo pipefail

state=${REPRODUCE_SLURM_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/reproduce-dhn/slurm}
munge_pidfile=/run/munge/munged.pid

# stop PIDFILE NAME: SIGTERM to the pid file's process if it is a live NAME (not a reused PID), then
# wait up to 30 s for it to exit (slurmctld saves its state first).
stop() {
  local pid
  [ -f "$1" ] || return 0
  pid=$(tr -dc 0-9 < "$1")
  if [ -z "$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$2" ]; then
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 300); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || { echo "stop_slurm: stopped $2 ($pid)" >&2; return 0; }
    sleep 0.1
  done
  echo "stop_slurm: $2 ($pid) still runs 30 s after SIGTERM" >&2
  return 1
}

stop "$state/d.pid" slurmd
stop "$state/ctld.pid" slurmctld
# munged only if start_slurm.sh started it (it recorded the PID) and that is still the munged the
# system's pid file names.
if [ -f "$state/munged.pid" ]; then
  if cmp -s "$state/munged.pid" "$munge_pidfile"; then
    stop "$munge_pidfile" munged
  fi
  rm -f "$state/munged.pid"
fi
echo "stop_slurm: SLURM is stopped (state folder $state)" >&2
