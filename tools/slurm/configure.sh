#!/usr/bin/env bash
# Configure a one-node Slurm cluster on 127.0.0.1: /etc/slurm/slurm.conf (partition "ci", the node's real
# CPUs, 80% of its memory, no GPUs: a job asking for one is refused at submission) and a munge key.
# Idempotent: rewrites its own slurm.conf every time, refuses to touch one it did not write.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
need_root
command -v slurmctld >/dev/null || die "slurmctld not installed; run tools/slurm/install.sh first"

if [ -e "$SLURM_CONF_FILE" ] && ! grep -qF "$HUSAI_SLURM_MARKER" "$SLURM_CONF_FILE"; then
    die "$SLURM_CONF_FILE exists and was not written by husai; refusing to replace a real cluster's config"
fi

node=$(hostname -s)
cpus=$(nproc)
mem_total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
real_mem_mb=$((mem_total_mb * 8 / 10))
mkdir -p "$HUSAI_SLURM_STATE"/{ctld,d,log,run} "$(dirname "$SLURM_CONF_FILE")"

# MinJobAge: finished jobs stay visible to squeue for 300 s, so the plugin's squeue status command (no
# slurmdbd here) sees every job finish; it needs >= 3 x slurm-init-seconds-before-status-checks.
# EnforcePartLimits=ALL: a job asking for more than the node has is refused instead of pending forever.
cat >"$SLURM_CONF_FILE.tmp" <<EOF
$HUSAI_SLURM_MARKER for a one-node test cluster; do not edit, rerun it.
ClusterName=husai-ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$HUSAI_SLURM_STATE/ctld
SlurmdSpoolDir=$HUSAI_SLURM_STATE/d
SlurmctldPidFile=$HUSAI_SLURM_STATE/run/slurmctld.pid
SlurmdPidFile=$HUSAI_SLURM_STATE/run/slurmd.pid
SlurmctldLogFile=$HUSAI_SLURM_STATE/log/slurmctld.log
SlurmdLogFile=$HUSAI_SLURM_STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem_mb State=UNKNOWN
PartitionName=$HUSAI_SLURM_PARTITION_NAME Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
mv "$SLURM_CONF_FILE.tmp" "$SLURM_CONF_FILE"
# slurmd of 22.05 warns about a missing cgroup.conf only with cgroup plugins; none are used here.
log "wrote $SLURM_CONF_FILE: node $node (127.0.0.1), $cpus CPUs, ${real_mem_mb} MB, partition $HUSAI_SLURM_PARTITION_NAME"

if [ ! -s "$MUNGE_KEY" ]; then
    mungekey --create --keyfile "$MUNGE_KEY"
    log "created $MUNGE_KEY"
fi
chown munge:munge "$MUNGE_KEY" /etc/munge
chmod 600 "$MUNGE_KEY"
install -d -o munge -g munge -m 755 "$MUNGE_SOCKET_DIR"
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
