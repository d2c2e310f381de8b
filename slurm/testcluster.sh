#!/usr/bin/env bash
# Throw-away single-node Slurm cluster on localhost, with real accounting.
#
#   slurm/testcluster.sh start  DIR   # MariaDB, munged, slurmdbd, slurmctld, slurmd; writes DIR/env.sh
#   slurm/testcluster.sh stop   DIR   # stops the cluster's daemons (munged is shared and left running)
#   slurm/testcluster.sh status DIR   # one line per daemon; exit 0 when all are alive
#   slurm/testcluster.sh kill-slurmd DIR    # SIGKILL slurmd alone, as if it crashed (its jobs keep running)
#   slurm/testcluster.sh start-slurmd DIR   # start slurmd again; waits until slurmctld hears from it
#
# All state (configuration, spool, logs, pid files, MariaDB data and socket) lives under DIR.
# Callers run `source DIR/env.sh` to point sbatch/squeue/sacct/submitit at the cluster.
# Needs: slurm-wlm, slurmdbd, munge, mariadb-server (Debian 12: Slurm 22.05, MariaDB 10.11), python3.
set -euo pipefail

# The daemons live in sbin, which a non-login or non-root PATH may lack.
export PATH=$PATH:/usr/sbin:/sbin

readonly CLUSTER_NAME=testcluster
readonly DB_NAME=slurm_acct_db
readonly DB_USER=slurm
# Longest Unix socket path (sun_path is 108 bytes including the terminating NUL).
readonly MAX_SOCKET_PATH=107

PROG=${0##*/}

usage() {
    cat >&2 <<EOF
usage: $PROG start DIR    start a single-node Slurm test cluster with all state under DIR
       $PROG stop DIR     stop it (idempotent; munged is left running)
       $PROG status DIR   report which daemons are alive (exit 0 if all are)
       $PROG kill-slurmd DIR    SIGKILL slurmd (a crash: running jobs' step daemons survive it)
       $PROG start-slurmd DIR   start slurmd again and wait until its node is no longer down
EOF
    exit 2
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$(now)"; }

# --- paths -------------------------------------------------------------------------------------

# Sets the global layout variables for cluster directory $1 (which must exist).
set_layout() {
    D=$(cd -- "$1" && pwd -P)
    SLURM_CONF_FILE=$D/slurm.conf
    SLURMDBD_CONF_FILE=$D/slurmdbd.conf
    GRES_CONF_FILE=$D/gres.conf
    ENV_FILE=$D/env.sh
    RUN_DIR=$D/run
    LOG_DIR=$D/log
    CTLD_STATE=$D/spool/ctld
    SLURMD_SPOOL=$D/spool/d
    DB_DATA=$D/mysql
    DB_SOCK=$D/mysql.sock
    DB_TMP=$D/tmp
    MARIADB_PID=$RUN_DIR/mariadb.pid
    SLURMDBD_PID=$RUN_DIR/slurmdbd.pid
    SLURMCTLD_PID=$RUN_DIR/slurmctld.pid
    SLURMD_PID=$RUN_DIR/slurmd.pid
}

# Order matters: stop walks this list backwards.
DAEMONS=(mariadb slurmdbd slurmctld slurmd)

pidfile_of() {
    case $1 in
        mariadb) printf '%s' "$MARIADB_PID" ;;
        slurmdbd) printf '%s' "$SLURMDBD_PID" ;;
        slurmctld) printf '%s' "$SLURMCTLD_PID" ;;
        slurmd) printf '%s' "$SLURMD_PID" ;;
    esac
}

comm_of() {
    case $1 in
        mariadb) printf 'mariadbd' ;;
        *) printf '%s' "$1" ;;
    esac
}

# Prints the pid of daemon $1 if its pid file names a live process with the right name.
live_pid() {
    local pidfile pid comm
    pidfile=$(pidfile_of "$1")
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$(comm_of "$1")" ]] || return 1
    printf '%s' "$pid"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# --- helpers -----------------------------------------------------------------------------------

# Prints four free TCP ports below the kernel's ephemeral range (so outgoing connections made
# between now and the daemons' bind() cannot take them), never 3306 or the Slurm defaults.
free_ports() {
    python3 - <<'EOF'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
avoid = {3306, 6817, 6818, 6819}
ports = []
for port in random.sample(range(20000, max(low, 20100)), 400):
    if port in avoid:
        continue
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        continue
    finally:
        s.close()
    ports.append(port)
    if len(ports) == 4:
        break
print(*ports)
EOF
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
    local seconds=$1 what=$2 deadline
    shift 2
    deadline=$(( $(date +%s) + seconds ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || die "timed out after ${seconds}s waiting for $what"
        sleep 0.1
    done
}

mariadb_ready() { mariadb --no-defaults -S "$DB_SOCK" -u root -e 'SELECT 1'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
sacct_ok() { SLURM_CONF=$SLURM_CONF_FILE sacct -X -n -P -o JobID; }
add_cluster() { port_open "$DBD_PORT" && SLURM_CONF=$SLURM_CONF_FILE sacctmgr -i add cluster "$CLUSTER_NAME"; }

# Succeeds once the node is idle; resumes it if it came up drained.
node_idle() {
    local state
    state=$(SLURM_CONF=$SLURM_CONF_FILE sinfo -h -N -n "$NODE_NAME" -o '%T' 2>/dev/null | head -n 1) || return 1
    case $state in
        idle) return 0 ;;
        *drain*)
            SLURM_CONF=$SLURM_CONF_FILE scontrol update nodename="$NODE_NAME" state=resume >/dev/null 2>&1 || true
            return 1 ;;
        *) return 1 ;;
    esac
}

start_munge() {
    if munge_ok; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "munged is not running and starting it needs root"
    [[ -r /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing (install the munge package)"
    mkdir -p /run/munge
    chown munge:munge /run/munge
    setsid runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1
    wait_for 10 "munged" munge_ok
}

# Pids of slurmstepd processes started by this cluster's slurmd (they inherit its SLURM_CONF).
our_stepds() {
    local pid
    for pid in $(pgrep -x slurmstepd || true); do
        if { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF_FILE"; then
            printf '%s\n' "$pid"
        fi
    done
}

# stop_daemons NAME...: SIGTERM to each, up to 5 s grace, then SIGKILL; waits until all are gone.
stop_daemons() {
    local name pid i pids=() alive=()
    for name in "$@"; do
        if pid=$(live_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    # 50 polls of 0.1 s, then SIGKILL to the survivors and 20 more polls.
    for (( i = 0; i < 70; i++ )); do
        alive=()
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then
                alive+=("$pid")
            fi
        done
        (( ${#alive[@]} > 0 )) || break
        if (( i == 50 )); then
            log "still alive after SIGTERM, sending SIGKILL: ${alive[*]}"
            kill -KILL "${alive[@]}" 2>/dev/null || true
        fi
        sleep 0.1
    done
    for name in "$@"; do
        rm -f -- "$(pidfile_of "$name")"
    done
}

show_logs() {
    local f
    for f in "$LOG_DIR"/*.log; do
        [[ -s $f ]] || continue
        printf '==> %s <==\n' "$f" >&2
        tail -n 15 -- "$f" >&2
    done
}

# --- subcommands -------------------------------------------------------------------------------

cmd_start() {
    local t0 name host_line real_mem cpus db_pass
    t0=$(now)
    mkdir -p -- "$1"
    set_layout "$1"

    # slurm.conf cannot quote paths and Unix socket paths are short: refuse what would break.
    [[ $D =~ ^[A-Za-z0-9_./+@:-]+$ ]] || die "DIR must not contain spaces or special characters: $D"
    (( ${#DB_SOCK} <= MAX_SOCKET_PATH )) || die "DIR path is too long for a Unix socket: $D"
    for name in "${DAEMONS[@]}"; do
        if live_pid "$name" >/dev/null; then
            die "$name is already running for $D; run '$PROG stop $D' first"
        fi
    done

    # From here on, a failure prints the daemons' logs and tears down what was started.
    trap 'rc=$?; if (( rc != 0 )); then show_logs; cmd_stop "$D" >/dev/null 2>&1 || true; fi' EXIT
    trap 'exit 130' INT TERM

    rm -rf -- "$RUN_DIR" "$LOG_DIR" "$D/spool" "$DB_DATA" "$DB_TMP" "$DB_SOCK"
    mkdir -p -- "$RUN_DIR" "$LOG_DIR" "$CTLD_STATE" "$SLURMD_SPOOL" "$DB_TMP"

    USER_NAME=$(id -un)
    read -r CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT < <(free_ports)
    [[ -n ${DB_PORT:-} ]] || die "could not find four free TCP ports"

    host_line=$(slurmd -C | grep -m 1 '^NodeName=')
    NODE_NAME=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$host_line")
    cpus=$(sed -nE 's/.* CPUs=([0-9]+).*/\1/p' <<<"$host_line")
    real_mem=$(sed -nE 's/.* RealMemory=([0-9]+).*/\1/p' <<<"$host_line")
    [[ -n $NODE_NAME && -n $cpus && -n $real_mem ]] || die "cannot parse 'slurmd -C': $host_line"
    (( ${#SLURMD_SPOOL} + ${#NODE_NAME} + 24 <= MAX_SOCKET_PATH )) \
        || die "DIR path is too long for slurmd's step sockets: $D"
    db_pass=$(od -An -N 12 -tx1 /dev/urandom | tr -d ' \n')

    # 1. MariaDB: own data dir, socket in DIR, TCP on 127.0.0.1 only.
    mariadb-install-db --no-defaults --user="$USER_NAME" --datadir="$DB_DATA" \
        --auth-root-authentication-method=socket --skip-test-db \
        >"$LOG_DIR/mariadb-install.log" 2>&1
    setsid mariadbd --no-defaults --user="$USER_NAME" --datadir="$DB_DATA" --socket="$DB_SOCK" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$MARIADB_PID" --tmpdir="$DB_TMP" \
        --log-error="$LOG_DIR/mariadb.log" --skip-name-resolve --skip-log-bin \
        --innodb-buffer-pool-size=512M --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
        --innodb-fast-shutdown=2 --innodb-buffer-pool-dump-at-shutdown=0 \
        </dev/null >>"$LOG_DIR/mariadb.log" 2>&1 &
    wait_for 20 "MariaDB" mariadb_ready
    mariadb --no-defaults -S "$DB_SOCK" -u root <<EOF
CREATE DATABASE $DB_NAME;
CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$db_pass';
CREATE USER '$DB_USER'@'localhost' IDENTIFIED BY '$db_pass';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
EOF

    # 2. munged (shared by every cluster on the machine).
    start_munge

    # 3. Configuration files.
    cat >"$GRES_CONF_FILE" <<EOF
NodeName=$NODE_NAME Name=gpu Type=v100 File=/dev/null
EOF
    (umask 077 && cat >"$SLURMDBD_CONF_FILE" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=$USER_NAME
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$SLURMDBD_PID
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$db_pass
StorageLoc=$DB_NAME
EOF
    )
    chmod 600 "$SLURMDBD_CONF_FILE"
    cat >"$SLURM_CONF_FILE" <<EOF
# Generated by $PROG: single-node test cluster, state under $D
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE_NAME(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$USER_NAME
SlurmdUser=$USER_NAME
AuthType=auth/munge
AuthInfo=cred_expire=5
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
GresTypes=gpu
JobRequeue=1
ReturnToService=2
MinJobAge=3600
KillWait=2
SlurmdTimeout=10
InactiveLimit=0
Waittime=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
# MaxRSS comes from samples, not from the end of a step: every second, or seconds-long jobs have none
JobAcctGatherFrequency=task=1
JobCompType=jobcomp/none
$host_line NodeAddr=127.0.0.1 Gres=gpu:v100:1 State=UNKNOWN
PartitionName=debug Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE_NAME Default=NO MaxTime=INFINITE State=UP
EOF
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE" >"$ENV_FILE"

    # 4. slurmdbd, then register the cluster in the accounting database.
    SLURM_CONF=$SLURM_CONF_FILE setsid slurmdbd </dev/null >>"$LOG_DIR/slurmdbd.log" 2>&1
    wait_for 30 "slurmdbd / sacctmgr add cluster" add_cluster

    # 5. slurmctld and slurmd (both daemonise and write their pid files).
    # slurmd retries a failed registration only every ~10 s, so start it once slurmctld listens.
    SLURM_CONF=$SLURM_CONF_FILE setsid slurmctld </dev/null >>"$LOG_DIR/slurmctld.log" 2>&1
    wait_for 20 "slurmctld" port_open "$CTLD_PORT"
    SLURM_CONF=$SLURM_CONF_FILE setsid slurmd </dev/null >>"$LOG_DIR/slurmd.log" 2>&1

    # 6. Ready when the node is idle and sacct answers.
    wait_for 30 "node $NODE_NAME to become idle" node_idle
    wait_for 15 "sacct" sacct_ok

    trap - EXIT INT TERM
    log "cluster up in $(elapsed "$t0") s; source $(printf '%q' "$ENV_FILE")"
}

cmd_stop() {
    local t0 i pids job_ids
    t0=$(now)
    [[ -d $1 ]] || { log "nothing to stop: $1 does not exist"; return 0; }
    set_layout "$1"

    # Cancel jobs first so their slurmstepd processes end cleanly with the cluster.
    if live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null; then
        mapfile -t pids < <(our_stepds)
        if (( ${#pids[@]} > 0 )); then
            mapfile -t job_ids < <(SLURM_CONF=$SLURM_CONF_FILE timeout 5 squeue -h -o '%A' 2>/dev/null || true)
            if (( ${#job_ids[@]} > 0 )); then
                SLURM_CONF=$SLURM_CONF_FILE timeout 5 scancel --quiet "${job_ids[@]}" 2>/dev/null || true
            fi
            for (( i = 0; i < 80; i++ )); do
                [[ -z $(our_stepds) ]] && break
                sleep 0.1
            done
        fi
    fi
    # slurmd and slurmctld take ~2 s each to shut down; stop them together.
    stop_daemons slurmd slurmctld
    # Step daemons that outlived the cancellation (e.g. slurmctld was already gone).
    mapfile -t pids < <(our_stepds)
    if (( ${#pids[@]} > 0 )); then
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    stop_daemons slurmdbd
    stop_daemons mariadb
    rm -f -- "$DB_SOCK"
    log "cluster stopped in $(elapsed "$t0") s"
}

# Succeeds once slurmctld reports the node in a state other than down / not responding.
node_back() {
    local state
    state=$(SLURM_CONF=$SLURM_CONF_FILE sinfo -h -N -n "$NODE_NAME" -o '%T' 2>/dev/null | head -n 1) || return 1
    [[ -n $state && $state != *down* && $state != *'*'* ]]
}

cmd_kill_slurmd() {
    local pid
    [[ -d $1 ]] || die "$1 does not exist"
    set_layout "$1"
    pid=$(live_pid slurmd) || die "slurmd is not running for $D"
    kill -KILL "$pid"
    rm -f -- "$SLURMD_PID"
    log "killed slurmd (pid $pid)"
}

cmd_start_slurmd() {
    [[ -d $1 ]] || die "$1 does not exist"
    set_layout "$1"
    live_pid slurmctld >/dev/null || die "slurmctld is not running for $D"
    if ! live_pid slurmd >/dev/null; then
        SLURM_CONF=$SLURM_CONF_FILE setsid slurmd </dev/null >>"$LOG_DIR/slurmd.log" 2>&1
    fi
    NODE_NAME=$(slurmd -C | sed -nE 's/^NodeName=([^ ]+).*/\1/p')
    wait_for 60 "node $NODE_NAME to come back" node_back
    log "slurmd is back"
}

cmd_status() {
    local name pid all=0
    [[ -d $1 ]] || die "$1 does not exist"
    set_layout "$1"
    if munge_ok; then
        printf '%-10s running\n' munged
    else
        printf '%-10s stopped\n' munged
        all=1
    fi
    for name in "${DAEMONS[@]}"; do
        if pid=$(live_pid "$name"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s stopped\n' "$name"
            all=1
        fi
    done
    return "$all"
}

main() {
    (( $# == 2 )) || usage
    [[ -n $2 ]] || usage
    case $1 in
        start) cmd_start "$2" ;;
        stop) cmd_stop "$2" ;;
        status) cmd_status "$2" ;;
        kill-slurmd) cmd_kill_slurmd "$2" ;;
        start-slurmd) cmd_start_slurmd "$2" ;;
        *) usage ;;
    esac
}

main "$@"
