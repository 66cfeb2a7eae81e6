#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, to run the study through `snakemake --executor slurm`
# the way it runs on a site's cluster (sbatch, srun, the jobstep plugin, resources, partitions).
#
#   workflow/cluster/local-slurm.sh up      # install slurm-wlm + munge where missing, configure, start, wait idle
#   workflow/cluster/local-slurm.sh status  # sinfo of this cluster, or why it is not up
#   workflow/cluster/local-slurm.sh env     # the line to eval: export SLURM_CONF=...
#   workflow/cluster/local-slurm.sh down    # cancel its jobs, stop the daemons it started (by pid file)
#
# Everything it writes lives in one scratch folder it owns, $LIB25D_SLURM_DIR (default
# /tmp/lib25d-slurm): slurm.conf, a munge key and socket, state, spool, logs, pid files. Outside it, one
# symbolic link, /etc/slurm/slurm.conf -> that slurm.conf, made only where the machine has no slurm.conf
# and removed by `down`: Snakemake's jobstep plugin runs each job through an `srun` whose environment it
# strips of SLURM_* variables, SLURM_CONF included, so inside a job Slurm finds its configuration only at
# the default path. Its own ports (16817/16818) and munge socket keep it apart from a system munged, which
# it never starts, stops or reconfigures. The one partition is `local` (CPU only;
# workflow/profiles/local-slurm submits to it).
#
# Needs: root (slurmd starts jobs as their users; packages), Debian/Ubuntu's apt-get where slurm-wlm or
# munge are missing. Elsewhere install Slurm (slurmctld, slurmd, client commands) and MUNGE yourself.
set -euo pipefail

DIR=${LIB25D_SLURM_DIR:-/tmp/lib25d-slurm}
PARTITION=local
CTLD_PORT=${LIB25D_SLURM_PORT:-16817}
WAIT_S=${LIB25D_SLURM_WAIT:-60}
CONF=$DIR/slurm.conf
LINK=/etc/slurm/slurm.conf
SOCKET=$DIR/munge/munge.socket.2
export SLURM_CONF=$CONF

die() { echo "local-slurm.sh: $*" >&2; exit 1; }

# -- processes this script started: a pid file and the program it must still be ----------------------
alive() {  # alive PIDFILE PROGRAM: the pid in the file runs PROGRAM (a reused pid is not ours)
    local pid
    [[ -s $1 ]] && pid=$(<"$1") && [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/cmdline ]] \
        && tr '\0' ' ' </proc/"$pid"/cmdline | grep -q "$2"
}

stop() {  # stop PIDFILE PROGRAM: TERM, wait up to 20 s, then KILL; only the pid the file names
    local pid
    if alive "$1" "$2"; then
        pid=$(<"$1")
        kill -TERM "$pid"
        for _ in $(seq 40); do alive "$1" "$2" || break; sleep 0.5; done
        if alive "$1" "$2"; then kill -KILL "$pid"; fi
        echo "stopped $2 (pid $pid)"
    fi
    rm -f "$1"
}

# -- setup ---------------------------------------------------------------------------------------------
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return
    command -v apt-get >/dev/null \
        || die "${missing[*]} missing and no apt-get: install Slurm (slurmctld, slurmd, sbatch) and MUNGE yourself"
    echo "installing ${missing[*]} (apt-get)"
    # Package scripts must not start the system's munge/slurm services: a policy-rc.d denies it, ours
    # only where the machine has none, removed again afterwards.
    local policy=/usr/sbin/policy-rc.d own_policy=
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; own_policy=1; fi
    local rc=0 log=$DIR/log/apt.log
    { apt_install "${missing[@]}" >"$log" 2>&1 \
        || { apt-get update -q >>"$log" 2>&1 && apt_install "${missing[@]}" >>"$log" 2>&1; }; } || rc=$?  # stale lists
    if [[ -n $own_policy ]]; then rm -f "$policy"; fi
    [[ $rc -eq 0 ]] || die "apt-get install ${missing[*]} failed (exit $rc): see $DIR/log/apt.log"
}

write_config() {
    # The node as slurmd sees it (CPUs, sockets, cores, memory; `slurmd -C`), at most the CPUs this process
    # may use (a container's share), with 10 % of the memory left to the system: a node configured with
    # more than it has is drained at once.
    local node name memory usable
    node=$(slurmd -C | head -n 1)
    name=$(sed -n 's/^NodeName=\([^ ]*\) .*/\1/p' <<<"$node")
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    [[ -n $name && -n $memory ]] || die "slurmd -C gave no node description ('$node'): is slurmd installed?"
    node=${node/RealMemory=$memory/RealMemory=$((memory * 9 / 10))}
    usable=$(nproc)
    if (( usable < $(sed -n 's/.* CPUs=\([0-9]*\) .*/\1/p' <<<"$node") )); then
        node="NodeName=$name CPUs=$usable RealMemory=$((memory * 9 / 10))"
    fi
    cat >"$CONF" <<EOF
# Written by workflow/cluster/local-slurm.sh for $(hostname): one node, one CPU partition.
ClusterName=lib25d
SlurmctldHost=$name(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
# No accounting database here: finished jobs stay visible to squeue for an hour, which is what
# snakemake's status queries (slurm-status-command: squeue) read.
MinJobAge=3600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$name Default=YES MaxTime=INFINITE State=UP
EOF
}

link_config() {  # the default path, for the srun inside each job (see the top); never over a system file
    if [[ -L $LINK && $(readlink "$LINK") == "$CONF" ]]; then return; fi
    if [[ -e $LINK || -L $LINK ]]; then
        die "$LINK exists (a system Slurm?): jobs would read it, not $CONF; move it away or use another machine"
    fi
    mkdir -p "$(dirname "$LINK")"
    ln -s "$CONF" "$LINK"
}

start_munge() {
    alive "$DIR/munge/munged.pid" munged && return
    id munge >/dev/null 2>&1 || die "no user 'munge' (the munge package creates it): reinstall munge"
    install -d -o munge -g munge -m 0755 "$DIR/munge"  # clients reach the socket; the key stays 0600
    if [[ ! -s $DIR/munge/munge.key ]]; then  # this cluster's own key, readable by munge only
        (umask 077; head -c 1024 /dev/urandom >"$DIR/munge/munge.key")
        chown munge:munge "$DIR/munge/munge.key"
    fi
    runuser -u munge -- munged --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start: see $DIR/munge/munged.log"
}

start_slurm() {
    alive "$DIR/run/slurmctld.pid" slurmctld || slurmctld -f "$CONF" \
        || die "slurmctld did not start: see $DIR/log/slurmctld.log"
    alive "$DIR/run/slurmd.pid" slurmd || slurmd -f "$CONF" || die "slurmd did not start: see $DIR/log/slurmd.log"
}

wait_idle() {
    local state=
    for _ in $(seq $((WAIT_S * 2))); do
        state=$(sinfo -h -p "$PARTITION" -o %T 2>/dev/null | head -n 1)
        [[ $state == idle || $state == mixed || $state == allocated ]] && { sinfo -p "$PARTITION"; return; }
        sleep 0.5
    done
    die "node not idle after ${WAIT_S} s (state '${state:-no answer}'): see $DIR/log/slurmctld.log and slurmd.log"
}

# -- commands --------------------------------------------------------------------------------------------
up() {
    [[ $(id -u) -eq 0 ]] || die "needs root (slurmd starts jobs as their users; apt-get installs): run it as root"
    mkdir -p "$DIR"/{state,spool,log,run}
    chmod 0755 "$DIR"
    install_packages
    if ! alive "$DIR/run/slurmctld.pid" slurmctld; then write_config; fi  # a running cluster keeps its file
    link_config
    start_munge
    start_slurm
    wait_idle
    echo "up: partition '$PARTITION', configuration $CONF (linked at $LINK); stop it with: $0 down"
}

down() {
    if [[ -f $CONF ]] && alive "$DIR/run/slurmctld.pid" slurmctld; then  # its jobs first: no step outlives slurmd
        scancel --partition "$PARTITION" 2>/dev/null || true
        for _ in $(seq 40); do
            [[ -z $(squeue -h -t RUNNING,COMPLETING,PENDING 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    stop "$DIR/run/slurmd.pid" slurmd
    stop "$DIR/run/slurmctld.pid" slurmctld
    stop "$DIR/munge/munged.pid" munged
    if [[ -L $LINK && $(readlink "$LINK") == "$CONF" ]]; then rm -f "$LINK"; fi
    echo "down (files kept in $DIR)"
}

status() {
    alive "$DIR/run/slurmctld.pid" slurmctld || { echo "local-slurm.sh: not up (no slurmctld of $DIR runs)"; return 1; }
    sinfo -p "$PARTITION"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) die "usage: $0 up|down|status|env (got '${1:-}')" ;;
esac
