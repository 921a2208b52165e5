#!/usr/bin/env bash
# Installs and starts the real services the tests use: a PostgreSQL cluster of our own and a
# single-node Slurm (slurmctld + slurmd), both under one state directory. Nothing here touches
# the machine's packaged PostgreSQL cluster.
#
#   scripts/services.sh start   # install if missing, start, print the env to source
#   scripts/services.sh stop    # stop what `start` started (by the PIDs it recorded)
#
# `start` writes `$LIFTOFF_SERVICES/env` (export lines: LIFTOFF_TEST_POSTGRES, SLURM_CONF);
# the test script sources it.
set -euo pipefail

DIR="${LIFTOFF_SERVICES:-/tmp/liftoff-services}"
PG_PORT="${LIFTOFF_PG_PORT:-55432}"

log() { echo "services: $*" >&2; }

need_root_for_install() {
    if [ "$(id -u)" != 0 ]; then
        log "missing $1 and not root: install it with apt-get, or run as root"
        exit 1
    fi
}

install() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    pg_bin >/dev/null 2>&1 || missing+=(postgresql)
    # Jobs: git sources, and Python virtual environments for runs with requirements.
    command -v git >/dev/null || missing+=(git)
    command -v python3 >/dev/null || missing+=(python3)
    venv_check="$(mktemp -d)"
    python3 -m venv "$venv_check/v" >/dev/null 2>&1 || missing+=(python3-venv)
    rm -rf "$venv_check"
    if [ ${#missing[@]} -gt 0 ]; then
        need_root_for_install "${missing[*]}"
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" munge >/dev/null
        # python3-venv may be named after the exact version on some releases.
        python3 -m venv "$(mktemp -d)/v" >/dev/null 2>&1 ||
            apt-get install -y -qq --no-install-recommends "python3.$(python3 -c 'import sys; print(sys.version_info[1])')-venv" >/dev/null
    fi
}

# The directory of PostgreSQL's server binaries (initdb, pg_ctl).
pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    done
    return 1
}

start_postgres() {
    local bin pgdir="$DIR/pg"
    bin="$(pg_bin)"
    # pg_ctl refuses to run as root: act as the postgres user.
    local as=()
    [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
    if [ -f "$pgdir/data/postmaster.pid" ]; then
        if "${as[@]}" "$bin/pg_ctl" -D "$pgdir/data" status >/dev/null 2>&1; then
            log "postgres already running on port $PG_PORT"
            return
        fi
    fi
    rm -rf "$pgdir"
    mkdir -p "$pgdir"
    chown postgres: "$pgdir" 2>/dev/null || true
    "${as[@]}" "$bin/initdb" -D "$pgdir/data" -U postgres -A trust --no-sync >"$pgdir/initdb.log" 2>&1
    # Tests create a database each; fsync off because a test cluster needs no durability.
    "${as[@]}" "$bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $pgdir -c fsync=off -c max_connections=300" \
        start >/dev/null
    log "postgres up on 127.0.0.1:$PG_PORT"
}

stop_postgres() {
    local bin pgdir="$DIR/pg"
    bin="$(pg_bin)" || return 0
    [ -d "$pgdir/data" ] || return 0
    local as=()
    [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
    "${as[@]}" "$bin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
}

start_slurm() {
    local sd="$DIR/slurm"
    if [ -f "$sd/slurmctld.pid" ] && kill -0 "$(cat "$sd/slurmctld.pid")" 2>/dev/null; then
        log "slurm already running"
        return
    fi
    rm -rf "$sd"
    mkdir -p "$sd/state" "$sd/spool"
    chown -R slurm: "$sd" 2>/dev/null || true
    local mem
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    cat >"$sd/slurm.conf" <<CONF
ClusterName=liftoff-ci
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/none
CredType=cred/none
StateSaveLocation=$sd/state
SlurmdSpoolDir=$sd/spool
SlurmctldPidFile=$sd/slurmctld.pid
SlurmdPidFile=$sd/slurmd.pid
SlurmctldLogFile=$sd/slurmctld.log
SlurmdLogFile=$sd/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$sd/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MailProg=/bin/true
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue this long (the runner reads exit codes there).
MinJobAge=600
MaxJobCount=100000
KillWait=5
NodeName=localhost CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:32
CONF
    export SLURM_CONF="$sd/slurm.conf"
    slurmctld -D -f "$SLURM_CONF" >"$sd/slurmctld.out" 2>&1 &
    echo $! >"$sd/slurmctld.pid.ours"
    slurmd -D -N localhost -f "$SLURM_CONF" >"$sd/slurmd.out" 2>&1 &
    echo $! >"$sd/slurmd.pid.ours"
    local i
    for i in $(seq 1 100); do
        if [ "$(sinfo -h -o %T 2>/dev/null | head -1)" = idle ]; then
            log "slurm up (SLURM_CONF=$SLURM_CONF)"
            return
        fi
        sleep 0.2
    done
    log "slurm did not reach idle; logs in $sd"
    tail -20 "$sd/slurmctld.log" "$sd/slurmd.log" >&2 || true
    exit 1
}

stop_slurm() {
    local sd="$DIR/slurm" f
    for f in "$sd/slurmd.pid.ours" "$sd/slurmctld.pid.ours"; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
}

case "${1:-}" in
    start)
        mkdir -p "$DIR"
        install
        start_postgres
        start_slurm
        cat >"$DIR/env" <<ENV
export LIFTOFF_TEST_POSTGRES=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export SLURM_CONF=$DIR/slurm/slurm.conf
ENV
        echo "$DIR/env"
        ;;
    stop)
        stop_slurm
        stop_postgres
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
