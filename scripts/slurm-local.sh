#!/usr/bin/env bash
# A one-node SLURM on this machine, for the launcher tests (tests/launchers) and for trying `--launcher slurm`.
#
#   scripts/slurm-local.sh start   install slurmctld/slurmd/slurm-client/munge if missing (Debian packages), write a
#                                  one-node slurm.conf for this machine's cores and memory, start munged, slurmctld
#                                  and slurmd, and wait until `sinfo` shows the node idle
#   scripts/slurm-local.sh stop    stop the three daemons this script started (by their pid files)
#   scripts/slurm-local.sh status  print sinfo
#
# Needs root (it writes /etc/slurm/slurm.conf and runs the daemons as root, as a CI container does). It refuses to
# touch a slurm.conf it did not write, so it never reconfigures a real cluster node. No systemd is needed: the
# plugins chosen (proctrack/linuxproc, task/none, no accounting) work without cgroups or slurmdbd.
set -euo pipefail

STATE_DIR="${SLURM_LOCAL_DIR:-/var/tmp/slurm-local}"
CONF=/etc/slurm/slurm.conf
MARK="# written by distillers scripts/slurm-local.sh"
MUNGE_PID=/run/munge/munged.pid
WAIT_S="${SLURM_LOCAL_WAIT_S:-120}"

log() { echo "slurm-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || die "installing the packages needs root"
    log "installing slurmctld slurmd slurm-client munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching a real cluster's configuration"
    fi
    local host node
    host="$(hostname -s)"
    # slurmd's own view of the hardware (CPUs, sockets, cores, threads, memory): a node configured with more than
    # slurmd detects is drained, so the detected line is what the node is declared with.
    node="$(slurmd -C | head -n 1)"
    case "$node" in NodeName=*) ;; *) die "slurmd -C did not describe this machine: $node" ;; esac
    mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/d" /etc/slurm
    cat > "$CONF" <<EOF
$MARK
ClusterName=distillers-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=30
$node
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    log "wrote $CONF for: $node"
}

start_munge() {
    if [ -f "$MUNGE_PID" ] && kill -0 "$(cat "$MUNGE_PID")" 2>/dev/null; then
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then  # the package usually generates one; a fresh random key otherwise
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    munge -n | unmunge >/dev/null || die "munge does not answer (see /var/log/munge/munged.log)"
}

daemon_running() {  # $1: pid file
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_idle() {
    local waited=0 state
    while [ "$waited" -lt "$WAIT_S" ]; do
        state="$(sinfo -h -N -o %T 2>/dev/null | head -n 1 || true)"
        case "$state" in
            idle|mixed|allocated) log "node $(hostname -s) is $state after ${waited}s"; return ;;
            drain*|down*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
        waited=$((waited + 1))
    done
    sinfo -N -l >&2 || true
    tail -n 20 "$STATE_DIR/slurmctld.log" "$STATE_DIR/slurmd.log" >&2 || true
    die "the node did not become idle within ${WAIT_S}s"
}

start() {
    install_packages
    write_conf
    start_munge
    daemon_running "$STATE_DIR/slurmctld.pid" || slurmctld
    daemon_running "$STATE_DIR/slurmd.pid" || slurmd
    wait_idle
}

stop_pidfile() {  # $1: name, $2: pid file
    if daemon_running "$2"; then
        local pid
        pid="$(cat "$2")"
        kill "$pid"
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        log "stopped $1 ($pid)"
    fi
}

stop() {
    stop_pidfile slurmd "$STATE_DIR/slurmd.pid"
    stop_pidfile slurmctld "$STATE_DIR/slurmctld.pid"
    stop_pidfile munged "$MUNGE_PID"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo -N -l ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
