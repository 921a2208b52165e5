#!/usr/bin/env bash
# Installs and starts the real services the tests use, all under one state directory: a
# PostgreSQL cluster of our own, a single-node Slurm (slurmctld + slurmd), a Docker engine of our
# own, a local image registry, a podman API service, a Ray head node (from PyPI, in a
# virtual environment kept in $LIFTOFF_RAY_VENV), and Chromium with chromedriver installed
# (the browser tests start their own). Test images are made locally (no
# registry can be reached): liftoff-test/busybox:latest and liftoff-test/python:3. Nothing here
# touches the machine's packaged PostgreSQL cluster or any Docker engine we did not start.
#
#   scripts/services.sh start   # install if missing, start, print the env to source
#   scripts/services.sh stop    # stop what `start` started (by the PIDs it recorded)
#
# `start` writes `$LIFTOFF_SERVICES/env` (export lines: LIFTOFF_TEST_POSTGRES, SLURM_CONF,
# LIFTOFF_TEST_DOCKER, LIFTOFF_TEST_REGISTRY, LIFTOFF_TEST_PODMAN, LIFTOFF_TEST_RAY); the test
# script sources it.
# Only that path goes to stdout. `stop` leaves images and the image cache in place.
set -euo pipefail

DIR="${LIFTOFF_SERVICES:-/tmp/liftoff-services}"
PG_PORT="${LIFTOFF_PG_PORT:-55432}"
REGISTRY=127.0.0.1:5555
# The debootstrapped Python rootfs tarball lives here, outside $DIR, so that it survives `stop`
# and a later `start` on the same machine skips debootstrap (~1 min).
IMAGE_CACHE="${LIFTOFF_IMAGE_CACHE:-/var/cache/liftoff-test-images}"
DOCKER_SOCK="$DIR/docker/docker.sock"
PODMAN_SOCK="$DIR/podman/podman.sock"
BUSYBOX_IMAGE=liftoff-test/busybox:latest
PYTHON_IMAGE=liftoff-test/python:3
# Ray's virtual environment (~400 MB) stays between runs, as the image cache does.
RAY_VENV="${LIFTOFF_RAY_VENV:-/var/cache/liftoff-ray/v}"
RAY_VERSION=2.60.0
RAY_DASHBOARD=127.0.0.1:8265

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
    # Containers: our own Docker engine, a local registry, podman (with runc: crun fails here),
    # and what the test images are made of.
    { command -v dockerd && command -v docker; } >/dev/null || missing+=(docker.io)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v curl >/dev/null || missing+=(curl)
    # The dashboard's browser tests: headless Chromium driven over WebDriver.
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    # The Kubernetes stand-in is checked with clients no one here wrote: kubectl (the
    # machine's, else Debian's) and Debian's Python client, for the system python3.
    command -v kubectl >/dev/null || missing+=(kubernetes-client)
    /usr/bin/python3 -c 'import kubernetes' >/dev/null 2>&1 || missing+=(python3-kubernetes)
    command -v ip >/dev/null || missing+=(iproute2)
    case "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)" in
        *"ok installed") ;;
        *) missing+=(busybox-static) ;;
    esac
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

# Waits until `CMD...` succeeds: wait_for PID SECONDS LOG WHAT CMD... Polls every 0.2 s; if the
# process PID dies or SECONDS pass, prints the last lines of LOG and exits 1.
wait_for() {
    local pid=$1 secs=$2 logf=$3 what=$4
    shift 4
    local deadline=$(( $(date +%s) + secs ))
    while ! "$@" >/dev/null 2>&1; do
        if ! alive "$pid"; then
            log "$what exited; last lines of $logf:"
            tail -n 30 "$logf" >&2 || true
            exit 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "$what did not answer within ${secs}s; last lines of $logf:"
            tail -n 30 "$logf" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

# True if PID runs (a zombie does not count: nothing may reap it here).
alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [ -n "$state" ] && [ "$state" != Z ]
}

# True if the PID recorded in FILE is alive and is the program NAME (not a reused PID).
ours_alive() {
    local f=$1 name=$2 pid
    [ -f "$f" ] || return 1
    pid="$(cat "$f")"
    alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$name" ]
}

# stop_ours FILE NAME SECONDS: TERM the process recorded in FILE (if it still is NAME), give it
# SECONDS to exit, then KILL it.
stop_ours() {
    local f=$1 name=$2 secs=$3 pid i
    if ours_alive "$f" "$name"; then
        pid="$(cat "$f")"
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 $(( secs * 5 ))); do
            alive "$pid" || break
            sleep 0.2
        done
        if alive "$pid"; then
            log "$name ($pid) still running after ${secs}s: KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

dk() { DOCKER_HOST="unix://$DOCKER_SOCK" docker "$@"; }

# dockerd's exec-root holds unix sockets (containerd's among them): keep its path short.
docker_exec_root() {
    local d="$DIR/docker/exec"
    if [ ${#d} -gt 60 ]; then d=/tmp/liftoff-docker-exec; fi
    echo "$d"
}

start_docker() {
    local dd="$DIR/docker" exec_root
    exec_root="$(docker_exec_root)"
    if ours_alive "$dd/dockerd.pid.ours" dockerd; then
        wait_for "$(cat "$dd/dockerd.pid.ours")" 30 "$dd/dockerd.log" dockerd dk version
        log "dockerd already running (unix://$DOCKER_SOCK)"
        return
    fi
    # The data root (images) stays between runs; the rest is per run.
    mkdir -p "$dd/data" "$exec_root"
    rm -f "$DOCKER_SOCK" "$dd/dockerd.pid"
    # Another engine (not ours, e.g. one at /tmp/docker/docker.sock) may run on this machine. A
    # dockerd with iptables on flushes the DOCKER chains at start, and it would share docker0:
    # then ours gets a bridge of its own and leaves iptables alone (published ports still work,
    # through docker-proxy; containers get no NAT to the outside).
    local extra=() others="" p
    for p in $(pgrep -x dockerd || true); do
        if alive "$p"; then others="$others $p"; fi
    done
    if [ -n "$others" ]; then
        if ! ip link show liftoff0 >/dev/null 2>&1; then
            ip link add liftoff0 type bridge
            ip addr add 10.213.0.1/24 dev liftoff0
            touch "$dd/bridge.ours"
        fi
        ip link set liftoff0 up
        extra=(--bridge liftoff0 --iptables=false --ip-masq=false)
        log "another dockerd runs here (pid$others): ours uses bridge liftoff0, no iptables"
    fi
    setsid dockerd --data-root "$dd/data" --exec-root "$exec_root" --pidfile "$dd/dockerd.pid" \
        -H "unix://$DOCKER_SOCK" "${extra[@]}" </dev/null >"$dd/dockerd.log" 2>&1 &
    echo $! >"$dd/dockerd.pid.ours"
    wait_for "$(cat "$dd/dockerd.pid.ours")" 30 "$dd/dockerd.log" dockerd dk version
    log "dockerd up (unix://$DOCKER_SOCK)"
}

stop_docker() {
    local dd="$DIR/docker" exec_root ctr_pid=""
    exec_root="$(docker_exec_root)"
    # dockerd runs a containerd of its own; a dockerd that exits stops it, a KILLed one does not.
    if ours_alive "$dd/dockerd.pid.ours" dockerd && [ -f "$exec_root/containerd/containerd.pid" ]; then
        ctr_pid="$(cat "$exec_root/containerd/containerd.pid")"
    fi
    stop_ours "$dd/dockerd.pid.ours" dockerd 10
    if [ -n "$ctr_pid" ] && alive "$ctr_pid" &&
        [ "$(cat "/proc/$ctr_pid/comm" 2>/dev/null || true)" = containerd ]; then
        kill "$ctr_pid" 2>/dev/null || true
    fi
    if [ -f "$dd/bridge.ours" ]; then
        ip link del liftoff0 2>/dev/null || true
        rm -f "$dd/bridge.ours"
    fi
}

# liftoff-test/busybox:latest: busybox-static's applets as symlinks in /bin, nothing else.
image_busybox() {
    local root="$DIR/images/busybox" a
    rm -rf "$root"
    mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for a in $("$root/bin/busybox" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    tar --numeric-owner -C "$root" -cf "$DIR/images/busybox.tar" .
    dk import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' \
        "$DIR/images/busybox.tar" "$BUSYBOX_IMAGE" >/dev/null
    rm -rf "$root"
    log "imported $BUSYBOX_IMAGE"
}

# The Debian mirror apt uses: the first URIs: of debian.sources, else the first deb line.
debian_mirror() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri="$(awk '$1 == "URIs:" {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(sed -e 's/\[[^]]*\]//' /etc/apt/sources.list | awk '$1 == "deb" {print $2; exit}')"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# Deletes a rootfs a debootstrap may have left behind, unmounting what it mounted inside first
# (its /proc, /sys, maybe a bind of /dev), and never crossing into another file system.
remove_rootfs() {
    local root=$1 m
    [ -e "$root" ] || return 0
    for m in $(awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$root"
}

# liftoff-test/python:3: a minbase Debian bookworm with python3, venv and pip.
image_python() {
    local tarball="$IMAGE_CACHE/python-bookworm.tar"
    if [ ! -s "$tarball" ]; then
        local root="$IMAGE_CACHE/python-bookworm.rootfs" uri
        mkdir -p "$IMAGE_CACHE"
        remove_rootfs "$root"
        uri="$(debian_mirror)"
        log "debootstrap bookworm from $uri into $root (about a minute)"
        if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip \
            bookworm "$root" "$uri" >"$IMAGE_CACHE/debootstrap.log" 2>&1; then
            log "debootstrap failed; last lines of $IMAGE_CACHE/debootstrap.log:"
            tail -n 30 "$IMAGE_CACHE/debootstrap.log" >&2 || true
            remove_rootfs "$root"
            exit 1
        fi
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar --numeric-owner -C "$root" -cf "$tarball.part" .
        mv "$tarball.part" "$tarball"
        remove_rootfs "$root"
    fi
    dk import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' "$tarball" "$PYTHON_IMAGE" >/dev/null
    log "imported $PYTHON_IMAGE"
}

images() {
    mkdir -p "$DIR/images"
    dk image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1 || image_busybox
    dk image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 || image_python
}

start_registry() {
    local rd="$DIR/registry"
    if ours_alive "$rd/registry.pid.ours" docker-registry; then
        wait_for "$(cat "$rd/registry.pid.ours")" 30 "$rd/registry.log" registry \
            curl -fsS "http://$REGISTRY/v2/"
        log "registry already running on $REGISTRY"
        return
    fi
    if curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then
        log "something we did not start already answers on $REGISTRY"
        exit 1
    fi
    rm -rf "$rd"
    mkdir -p "$rd/data"
    cat >"$rd/config.yml" <<YML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $rd/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
YML
    setsid docker-registry serve "$rd/config.yml" </dev/null >"$rd/registry.log" 2>&1 &
    echo $! >"$rd/registry.pid.ours"
    wait_for "$(cat "$rd/registry.pid.ours")" 30 "$rd/registry.log" registry \
        curl -fsS "http://$REGISTRY/v2/"
    # Docker allows plain http to registries on 127.0.0.0/8: check a push works.
    local tag="$REGISTRY/$BUSYBOX_IMAGE"
    dk tag "$BUSYBOX_IMAGE" "$tag"
    if ! dk push "$tag" >"$rd/push.log" 2>&1; then
        log "pushing $tag failed:"
        tail -n 20 "$rd/push.log" "$rd/registry.log" >&2 || true
        dk rmi "$tag" >/dev/null 2>&1 || true
        exit 1
    fi
    dk rmi "$tag" >/dev/null
    log "registry up on $REGISTRY (pushed $tag)"
}

stop_registry() {
    stop_ours "$DIR/registry/registry.pid.ours" docker-registry 5
}

# podman needs runc (crun fails here: hybrid cgroups) and ulimits below the machine's hard limit.
configure_podman() {
    local conf=/etc/containers/containers.conf
    if [ -f "$conf" ] && grep -Eq '^[[:space:]]*runtime[[:space:]]*=[[:space:]]*"runc"' "$conf"; then
        return
    fi
    if [ -f "$conf" ] && [ ! -f "$conf.liftoff-orig" ]; then
        cp "$conf" "$conf.liftoff-orig"
    fi
    mkdir -p /etc/containers
    cat >"$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]
[engine]
runtime = "runc"
CONF
    log "wrote $conf (runc, lower ulimits)"
}

start_podman() {
    local pd="$DIR/podman"
    configure_podman
    if ours_alive "$pd/podman.pid.ours" podman; then
        wait_for "$(cat "$pd/podman.pid.ours")" 30 "$pd/podman.log" "podman service" \
            curl -fsS --unix-socket "$PODMAN_SOCK" http://d/v1.40/version
        log "podman service already running (unix://$PODMAN_SOCK)"
    else
        mkdir -p "$pd"
        rm -f "$PODMAN_SOCK"
        setsid podman system service --time=0 "unix://$PODMAN_SOCK" \
            </dev/null >"$pd/podman.log" 2>&1 &
        echo $! >"$pd/podman.pid.ours"
        wait_for "$(cat "$pd/podman.pid.ours")" 30 "$pd/podman.log" "podman service" \
            curl -fsS --unix-socket "$PODMAN_SOCK" http://d/v1.40/version
        log "podman service up (unix://$PODMAN_SOCK)"
    fi
    # podman keeps its own image store (/var/lib/containers): load the same busybox image.
    if ! podman image exists "$BUSYBOX_IMAGE"; then
        if ! dk save "$BUSYBOX_IMAGE" | podman load >"$pd/load.log" 2>&1; then
            log "loading $BUSYBOX_IMAGE into podman failed:"
            tail -n 20 "$pd/load.log" >&2 || true
            exit 1
        fi
        log "loaded $BUSYBOX_IMAGE into podman"
    fi
}

# A Ray head node on loopback. `ray start --block` stays in the foreground and stops every
# process it started when it gets SIGTERM: that PID is the one recorded and stopped.
start_ray() {
    local rd="$DIR/ray" tmp
    if [ ! -x "$RAY_VENV/bin/ray" ]; then
        log "installing ray[default]==$RAY_VERSION into $RAY_VENV (from PyPI, ~30 s)"
        rm -rf "$RAY_VENV"
        mkdir -p "$(dirname "$RAY_VENV")"
        python3 -m venv "$RAY_VENV"
        "$RAY_VENV/bin/pip" install -q "ray[default]==$RAY_VERSION" >"$(dirname "$RAY_VENV")/pip.log" 2>&1 || {
            log "pip install ray failed; last lines:"
            tail -n 20 "$(dirname "$RAY_VENV")/pip.log" >&2
            rm -rf "$RAY_VENV"
            exit 1
        }
    fi
    if ours_alive "$rd/ray.pid.ours" ray; then
        wait_for "$(cat "$rd/ray.pid.ours")" 60 "$rd/ray.log" ray curl -fsS "http://$RAY_DASHBOARD/api/version"
        log "ray already running (http://$RAY_DASHBOARD)"
        return
    fi
    if curl -fsS "http://$RAY_DASHBOARD/api/version" >/dev/null 2>&1; then
        log "something we did not start already answers on $RAY_DASHBOARD"
        exit 1
    fi
    rm -rf "$rd"
    mkdir -p "$rd"
    # Ray's unix sockets live under its temp dir: keep the path short.
    tmp="$rd/tmp"
    if [ ${#tmp} -gt 40 ]; then tmp=/tmp/liftoff-ray; fi
    rm -rf "$tmp"
    # Tests reach nothing past loopback: pip in a run's runtime_env may use what the Ray
    # environment has, never an index.
    PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        setsid "$RAY_VENV/bin/ray" start --head --block --disable-usage-stats \
        --include-dashboard=true --dashboard-host=127.0.0.1 --node-ip-address=127.0.0.1 \
        --port=6379 --dashboard-port="${RAY_DASHBOARD##*:}" --temp-dir="$tmp" \
        --num-cpus=4 --num-gpus=0 </dev/null >"$rd/ray.log" 2>&1 &
    echo $! >"$rd/ray.pid.ours"
    wait_for "$(cat "$rd/ray.pid.ours")" 90 "$rd/ray.log" ray curl -fsS "http://$RAY_DASHBOARD/api/version"
    # The Jobs API answers once a job agent is up: submit a trivial job and see it succeed.
    local i status=""
    curl -fsS -X POST "http://$RAY_DASHBOARD/api/jobs/" -H 'content-type: application/json' \
        -d '{"entrypoint": "true"}' >"$rd/probe.json"
    local id
    id="$(sed -e 's/.*"submission_id": *"\([^"]*\)".*/\1/' "$rd/probe.json")"
    for i in $(seq 1 300); do
        status="$(curl -fsS "http://$RAY_DASHBOARD/api/jobs/$id" | sed -e 's/.*"status": *"\([A-Z]*\)".*/\1/')"
        case "$status" in SUCCEEDED) break ;; FAILED|STOPPED) break ;; esac
        sleep 0.2
    done
    if [ "$status" != SUCCEEDED ]; then
        log "ray's probe job ended $status; last lines of $rd/ray.log:"
        tail -n 30 "$rd/ray.log" >&2 || true
        exit 1
    fi
    log "ray up (http://$RAY_DASHBOARD)"
}

stop_ray() {
    stop_ours "$DIR/ray/ray.pid.ours" ray 20
}

stop_podman() {
    stop_ours "$DIR/podman/podman.pid.ours" podman 5
}

case "${1:-}" in
    start)
        mkdir -p "$DIR"
        install
        start_postgres
        start_slurm
        start_docker
        images
        start_registry
        start_podman
        start_ray
        cat >"$DIR/env" <<ENV
export LIFTOFF_TEST_POSTGRES=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export SLURM_CONF=$DIR/slurm/slurm.conf
export LIFTOFF_TEST_DOCKER=unix://$DOCKER_SOCK
export LIFTOFF_TEST_REGISTRY=$REGISTRY
export LIFTOFF_TEST_PODMAN=unix://$PODMAN_SOCK
export LIFTOFF_TEST_RAY=http://$RAY_DASHBOARD
ENV
        echo "$DIR/env"
        ;;
    stop)
        stop_ray
        stop_podman
        stop_registry
        stop_docker
        stop_slurm
        stop_postgres
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
