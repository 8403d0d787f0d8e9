#!/usr/bin/env bash
# `make test-slurm`: install Debian's Slurm + munge, configure a one-node cluster on 127.0.0.1, start it,
# run tests/slurm against it (the tiny husai workflow through the slurm executor plugin with
# profiles/ci-slurm, GPU requests refused, the b200/rusticl/clover profiles on a real sbatch), and stop the
# daemons this run started, also when something fails or the run is interrupted.
# Extra arguments go to pytest, e.g. tools/slurm/run-test.sh -k gpu
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source-path=SCRIPTDIR
source tools/slurm/common.sh
need_root
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || die "$PY not found: run 'make install' first"
"$PY" -c "import snakemake_executor_plugin_slurm" 2>/dev/null || die "snakemake-executor-plugin-slurm missing in $PY"

t0=$(date +%s)
started_now=$(mktemp)
test_pid=
finish() {
    local rc=$?
    trap - EXIT INT TERM
    # The tests run in their own session: end it whole (pytest, the snakemake processes under their own
    # `timeout`s), TERM first, KILL after 10 s (a waiting snakemake ignores TERM).
    if [ -n "$test_pid" ] && kill -0 "$test_pid" 2>/dev/null; then
        if [ "$(ps -o sid= -p "$test_pid" | tr -d ' ')" = "$test_pid" ]; then
            pkill -TERM -s "$test_pid" || true
            for _ in $(seq 10); do pgrep -s "$test_pid" >/dev/null || break; sleep 1; done
            pkill -KILL -s "$test_pid" || true
        else
            kill -KILL "$test_pid" 2>/dev/null || true
        fi
    fi
    if [ -s "$started_now" ]; then
        HUSAI_SLURM_ONLY="$(tr '\n' ' ' <"$started_now")" tools/slurm/stop.sh
    fi
    rm -f "$started_now"
    log "test-slurm $([ "$rc" -eq 0 ] && echo passed || echo "FAILED (exit $rc)") in $(($(date +%s) - t0)) s"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tools/slurm/install.sh
log "install done at +$(($(date +%s) - t0)) s"
tools/slurm/configure.sh
HUSAI_SLURM_STARTED_NOW="$started_now" tools/slurm/start.sh
log "cluster up at +$(($(date +%s) - t0)) s"

# A private --basetemp: other pytest runs on the machine prune /tmp/pytest-of-<user>, and jobs write there.
# In the background and waited for, so that INT/TERM reach the trap at once.
setsid timeout -k 30 "${HUSAI_SLURM_TEST_TIMEOUT:-2400}" env HUSAI_SLURM=1 \
    "$PY" -m pytest -q -rA -p no:cacheprovider --basetemp "$HUSAI_SLURM_STATE/pytest" tests/slurm "$@" &
test_pid=$!
wait "$test_pid"
