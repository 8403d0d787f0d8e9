#!/usr/bin/env bash
# Install Debian's Slurm (slurm-wlm 22.05: slurmctld, slurmd, client tools) and munge. Idempotent: does
# nothing when they are already installed. Package scripts are not allowed to start any daemon
# (start.sh starts exactly what the test needs, and stop.sh stops it).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
need_root

packages=(slurm-wlm slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "already installed: ${packages[*]} ($(dpkg-query -W -f='${Version}' slurmctld))"
    exit 0
fi

# Debian's invoke-rc.d asks /usr/sbin/policy-rc.d; exit 101 means "do not start services". Put one in
# place only for the duration of the install, and only when the machine has none of its own.
POLICY=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n%s (temporary)\nexit 101\n' "$HUSAI_SLURM_MARKER" >"$POLICY"
    chmod 755 "$POLICY"
    ours=1
fi
cleanup() { if [ "$ours" = 1 ] && grep -q "husai tools/slurm" "$POLICY" 2>/dev/null; then rm -f "$POLICY"; fi; }
trap cleanup EXIT

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
timeout -k 10 600 apt-get update -qq
timeout -k 10 900 apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
log "installed slurm $(dpkg-query -W -f='${Version}' slurmctld), munge $(dpkg-query -W -f='${Version}' munge)"
