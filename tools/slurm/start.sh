#!/usr/bin/env bash
# Start munged, slurmctld and slurmd directly (no systemd), wait until the node is idle. Idempotent: a
# daemon already running from an earlier start.sh is left as it is. Each daemon this script starts is
# listed in $HUSAI_SLURM_STATE/started, which stop.sh reads (and, when HUSAI_SLURM_STARTED_NOW names a file,
# appended to it). On failure it stops what it started.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
need_root
[ -f "$SLURM_CONF_FILE" ] || die "no $SLURM_CONF_FILE; run tools/slurm/configure.sh first"
mkdir -p "$HUSAI_SLURM_STATE/run"
STARTED="$HUSAI_SLURM_STATE/started"
touch "$STARTED"

started_now=()
on_error() {
    log "start failed; stopping what this run started: ${started_now[*]:-nothing}"
    if [ ${#started_now[@]} -gt 0 ]; then
        HUSAI_SLURM_ONLY="${started_now[*]}" "$(dirname "$0")/stop.sh" || true
    fi
    for f in slurmctld slurmd; do
        [ -f "$HUSAI_SLURM_STATE/log/$f.log" ] && { log "last lines of $f.log:"; tail -n 15 "$HUSAI_SLURM_STATE/log/$f.log" >&2; }
    done
    exit 1
}
trap on_error ERR

record() {  # record NAME PIDFILE
    grep -qx "$1 $2" "$STARTED" || echo "$1 $2" >>"$STARTED"
    started_now+=("$1")
    # The caller (run-test.sh) may ask for the names this call started, to stop exactly those.
    if [ -n "${HUSAI_SLURM_STARTED_NOW:-}" ]; then echo "$1" >>"$HUSAI_SLURM_STARTED_NOW"; fi
}

munge_pid="$MUNGE_SOCKET_DIR/munged.pid"
if pid_alive "$munge_pid"; then
    log "munged already running (pid $(cat "$munge_pid"))"
else
    install -d -o munge -g munge -m 755 "$MUNGE_SOCKET_DIR"
    runuser -u munge -- /usr/sbin/munged --pid-file="$munge_pid"
    wait_for 10 "munged pid file" test -s "$munge_pid"
    record munged "$munge_pid"
    log "started munged (pid $(cat "$munge_pid"))"
fi
wait_for 10 "a munge credential to decode" sh -c 'munge -n | unmunge'

ctld_pid="$HUSAI_SLURM_STATE/run/slurmctld.pid"
if pid_alive "$ctld_pid"; then
    log "slurmctld already running (pid $(cat "$ctld_pid"))"
else
    # -c: start from a clean state (no jobs or node states left from an earlier run).
    slurmctld -c -f "$SLURM_CONF_FILE"
    wait_for 15 "slurmctld pid file" test -s "$ctld_pid"
    record slurmctld "$ctld_pid"
    log "started slurmctld (pid $(cat "$ctld_pid"))"
fi
wait_for 30 "slurmctld to answer" scontrol ping

d_pid="$HUSAI_SLURM_STATE/run/slurmd.pid"
if pid_alive "$d_pid"; then
    log "slurmd already running (pid $(cat "$d_pid"))"
else
    slurmd -f "$SLURM_CONF_FILE"
    wait_for 15 "slurmd pid file" test -s "$d_pid"
    record slurmd "$d_pid"
    log "started slurmd (pid $(cat "$d_pid"))"
fi

node_ready() { sinfo -h -N -o '%T' | grep -Eq '^(idle|mixed|allocated)$'; }
if ! wait_for 60 "the node to become idle" node_ready; then
    sinfo -N -l >&2 || true
    false
fi
trap - ERR
log "cluster up: $(sinfo -h -o '%P %a %D nodes %T, %c CPUs, %m MB' | head -n 1)"
