#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/test_slurm.py: Debian's slurm-wlm and munge, started as root
# without systemd (CI machines and containers have none). Safe to rerun: it installs, writes and starts only what is
# missing, and ends when `sinfo` shows the node ready to take jobs.
#
# The config is the smallest that runs a job array as a real cluster does: munge authentication, processes tracked
# by their parent pid (proctrack/linuxproc: no cgroups needed), no CPU binding (task/none), no accounting daemon
# (slurmdbd: so `sacct` does not work here; `bench status` reads squeue). Cores and memory are consumable
# (cons_tres, CR_Core_Memory) with DefMemPerCPU: without it a job takes the node's whole memory and array jobs
# run one at a time.
set -euo pipefail

if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge
fi

# munge: one key (1024 random bytes, readable by munge alone), one daemon.
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
fi

# slurm.conf: this host as controller and only node, with the CPUs and memory slurmd itself detects.
host="$(hostname -s)"
node="$(slurmd -C | sed -n 1p)"  # NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. ... RealMemory=..
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf="$(mktemp)"
cat >"$conf" <<EOF
# Written by .ci/slurm-up.sh: a one-node test cluster.
ClusterName=bench-ci
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2048
ReturnToService=2
# Finished jobs stay listed by squeue for an hour (the default is 5 minutes): there is no accounting to ask later.
MinJobAge=3600
# scancel sends SIGTERM, which submitit's jobs ignore, then SIGKILL KillWait seconds later (30 by default).
KillWait=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$node
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
changed=0
if ! cmp -s "$conf" /etc/slurm/slurm.conf; then
    install -m 644 "$conf" /etc/slurm/slurm.conf
    changed=1
fi
rm -f "$conf"

running() {  # a daemon whose pid file names a live process of that name
    local pid
    pid="$(cat "/run/$1.pid" 2>/dev/null)" || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}
if running slurmctld; then
    [ "$changed" = 0 ] || scontrol reconfigure
else
    # -c: start with no saved jobs. A controller started here again (a later CI run on the same machine) would
    # otherwise reload the jobs of a killed session and requeue them, taking the cores the tests' jobs need.
    rm -rf /var/spool/slurmd/*
    /usr/sbin/slurmctld -c
fi
running slurmd || /usr/sbin/slurmd

# Ready when the node takes jobs (idle, or busy with jobs from an earlier run).
for _ in $(seq 120); do
    state="$(sinfo -h -N -n "$host" -o %T 2>/dev/null || true)"
    case "$state" in
        idle|mixed|allocated) sinfo; exit 0 ;;
        drain*|down*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
done
echo "slurm-up: node $host not ready after 60 s (state: ${state:-none}); see /var/log/slurm/" >&2
sinfo >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
