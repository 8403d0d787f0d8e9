# Shared settings for the one-node Slurm scripts; sourced, never run. See tools/slurm/README.md.
# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this file
# Everything the scripts start is recorded under $HUSAI_SLURM_STATE so stop.sh ends exactly that.

HUSAI_SLURM_STATE=${HUSAI_SLURM_STATE:-/var/tmp/husai-slurm}
SLURM_CONF_FILE=${SLURM_CONF_FILE:-/etc/slurm/slurm.conf}
HUSAI_SLURM_PARTITION_NAME=${HUSAI_SLURM_PARTITION_NAME:-ci}
# Written into every file we generate; configure.sh refuses to overwrite a slurm.conf without it.
HUSAI_SLURM_MARKER="# written by husai tools/slurm/configure.sh"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET_DIR=/run/munge

log() { printf '[husai-slurm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"
}

# pid_alive FILE: the pid recorded in FILE runs.
pid_alive() {
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND once a second until it succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local i
    for ((i = 0; i < seconds; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    log "gave up after ${seconds}s waiting for: $what"
    return 1
}
