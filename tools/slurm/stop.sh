#!/usr/bin/env bash
# Stop the daemons that start.sh started (listed in $HUSAI_SLURM_STATE/started), and nothing else:
# jobs of this test cluster are cancelled first, then slurmd, slurmctld, munged get SIGTERM, then SIGKILL
# after 15 s, in that order. Idempotent: with nothing recorded it does nothing. HUSAI_SLURM_ONLY="NAME ..."
# stops only those of the recorded daemons (run-test.sh: the ones its own start.sh call started).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
need_root
STARTED="$HUSAI_SLURM_STATE/started"
[ -s "$STARTED" ] || { log "nothing to stop"; exit 0; }

stop_one() {  # stop_one NAME PIDFILE
    local name=$1 pidfile=$2 pid i
    if ! pid_alive "$pidfile"; then
        log "$name already stopped"
        return 0
    fi
    pid=$(cat "$pidfile")
    # Only a process whose command is the recorded daemon: a recycled pid is left alone.
    if ! grep -qx "$name" "/proc/$pid/comm" 2>/dev/null; then
        log "pid $pid is no longer $name; leaving it alone"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 15; i++)); do
        kill -0 "$pid" 2>/dev/null || { log "stopped $name (pid $pid)"; return 0; }
        sleep 1
    done
    kill -KILL "$pid" 2>/dev/null
    log "killed $name (pid $pid) after 15 s"
}

only=" ${HUSAI_SLURM_ONLY:-slurmd slurmctld munged} "
wanted() { [[ "$only" == *" $1 "* ]] && grep -q "^$1 " "$STARTED"; }
# Jobs first, while slurmctld and munged still answer.
if wanted slurmctld && timeout -k 2 5 scontrol ping >/dev/null 2>&1; then
    timeout -k 2 10 scancel --quiet --partition="$HUSAI_SLURM_PARTITION_NAME" 2>/dev/null || true
fi
for name in slurmd slurmctld munged; do
    wanted "$name" || continue
    line=$(grep "^$name " "$STARTED" | tail -n 1)
    stop_one "$name" "${line#* }"
    grep -v "^$name " "$STARTED" >"$STARTED.tmp"
    mv "$STARTED.tmp" "$STARTED"
done
