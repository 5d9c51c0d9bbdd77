#!/usr/bin/env bash
# Real Apache Cassandra (one node, or a ring of three) and memcached on loopback, for development and tests.
#
#   cluster/services.sh install | start | stop | status
#   cluster/services.sh start-cassandra | stop-cassandra | start-memcached | stop-memcached
#   cluster/services.sh start-ring | stop-ring | wipe-ring | start-node N | stop-node N | kill-node N
#
# Cassandra 5.0.6 comes from Maven Central as its published jars (cluster/cassandra/pom.xml), fetched with
# `mvn -C`, which fails on any checksum mismatch; memcached comes from Debian's packages. Both listen on
# 127.0.0.1 only. `start` waits until each answers and is a no-op for one already running.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${FACEGRID_SERVICES_DIR:-$HOME/.local/share/facegrid/services}"
CQL_PORT="${FACEGRID_CASSANDRA_PORT:-9042}"
STORAGE_PORT="${FACEGRID_CASSANDRA_STORAGE_PORT:-7000}"
JMX_PORT="${FACEGRID_CASSANDRA_JMX_PORT:-7199}"
HEAP="${FACEGRID_CASSANDRA_HEAP:-1g}"
MEMCACHED_PORT="${FACEGRID_MEMCACHED_PORT:-11211}"
CASSANDRA_HOME="$STATE/cassandra"

say() { echo "services: $*" >&2; }
die() { say "$*"; exit 1; }

answers() {  # host port -> 0 when something accepts TCP connections there
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "installing needs root (or sudo) for: $*"; fi
}

install_memcached() {
    command -v memcached >/dev/null && return
    say "installing memcached from Debian's packages"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null
    # The package starts a system-wide daemon on 11211; facegrid runs its own, so stop that one.
    as_root systemctl disable --now memcached >/dev/null 2>&1 || as_root service memcached stop >/dev/null 2>&1 || true
}

install_cassandra() {
    command -v java >/dev/null || die "Cassandra needs Java 11 or 17 (Debian: apt-get install openjdk-17-jre-headless)"
    command -v mvn >/dev/null || die "fetching Cassandra needs Maven (Debian: apt-get install maven)"
    if [ -f "$CASSANDRA_HOME/lib/cassandra-all-5.0.6.jar" ]; then return; fi
    say "fetching Cassandra 5.0.6 from Maven Central (checksums enforced)"
    mkdir -p "$CASSANDRA_HOME"
    mvn -q -B -C -f "$HERE/cassandra/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$CASSANDRA_HOME/lib.partial" \
        || die "Maven could not fetch Cassandra (see the output above)"
    rm -rf "$CASSANDRA_HOME/lib" && mv "$CASSANDRA_HOME/lib.partial" "$CASSANDRA_HOME/lib"
}

start_memcached() {
    if answers 127.0.0.1 "$MEMCACHED_PORT"; then return; fi
    mkdir -p "$STATE"
    memcached -d -l 127.0.0.1 -p "$MEMCACHED_PORT" -m 128 -u "$(id -un)" -P "$STATE/memcached.pid"
    for _ in $(seq 50); do answers 127.0.0.1 "$MEMCACHED_PORT" && { say "memcached on 127.0.0.1:$MEMCACHED_PORT"; return; }; sleep 0.1; done
    die "memcached did not start"
}

stop_memcached() {
    [ -f "$STATE/memcached.pid" ] && kill "$(cat "$STATE/memcached.pid")" 2>/dev/null || true
    rm -f "$STATE/memcached.pid"
    for _ in $(seq 50); do answers 127.0.0.1 "$MEMCACHED_PORT" || return 0; sleep 0.1; done
}

# Module access Cassandra 5 needs on Java 17 (the flags its own jvm17-server.options passes).
JPMS_FLAGS=(
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
)

# One Cassandra JVM: launch_node HOME ADDRESS CQL_PORT STORAGE_PORT JMX_PORT HEAP SEEDS LOCAL_RF PIDFILE
launch_node() {
    local home="$1" address="$2" cql="$3" storage="$4" jmx="$5" heap="$6" seeds="$7" local_rf="$8" pidfile="$9"
    if answers "$address" "$cql"; then return; fi
    [ -d "$CASSANDRA_HOME/lib" ] || die "Cassandra is not installed: run '$0 install'"
    local conf="$home/conf" logs="$home/logs"
    mkdir -p "$conf" "$logs" "$home/data"
    sed -e "s#@STATE@#$home/data#g" -e "s#@STORAGE_PORT@#$storage#g" -e "s#@CQL_PORT@#$cql#g" \
        -e "s#@ADDRESS@#$address#g" -e "s#@SEEDS@#$seeds#g" -e "s#@LOCAL_RF@#$local_rf#g" \
        "$HERE/cassandra/cassandra.yaml.in" > "$conf/cassandra.yaml"
    cp "$HERE/cassandra/logback.xml" "$conf/logback.xml"
    : > "$logs/system.log"
    # ring_delay_ms: how long a joining node listens to gossip first; 5 s is plenty on one host.
    nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=300 "${JPMS_FLAGS[@]}" \
        -Dcassandra.config="file://$conf/cassandra.yaml" -Dlogback.configurationFile="$conf/logback.xml" \
        -Dcassandra.logdir="$logs" -Dcassandra.storagedir="$home/data" -Dcassandra-foreground=yes \
        -Dcassandra.jmx.local.port="$jmx" -Dcassandra.skip_wait_for_gossip_to_settle=0 \
        -Dcassandra.ring_delay_ms=5000 \
        -cp "$CASSANDRA_HOME/lib/*" org.apache.cassandra.service.CassandraDaemon \
        > "$logs/stdout.log" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 480); do
        if grep -q "Starting listening for CQL clients" "$logs/system.log" 2>/dev/null && answers "$address" "$cql"; then
            say "Cassandra on $address:$cql"; return
        fi
        kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$logs/stdout.log" "$logs/system.log" >&2; die "Cassandra at $address exited while starting"; }
        sleep 0.5
    done
    tail -20 "$logs/system.log" >&2
    die "Cassandra did not answer on $address:$cql within 240 s"
}

stop_pid() {  # PIDFILE [SIGNAL]: stop that JVM (SIGTERM, then SIGKILL after 20 s), or kill it at once
    local pidfile="$1" signal="${2:-TERM}"
    [ -f "$pidfile" ] || return 0
    local pid; pid="$(cat "$pidfile")"
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

start_cassandra() {
    launch_node "$CASSANDRA_HOME" 127.0.0.1 "$CQL_PORT" "$STORAGE_PORT" "$JMX_PORT" "$HEAP" \
        "127.0.0.1:$STORAGE_PORT" 1 "$STATE/cassandra.pid"
}

stop_cassandra() { stop_pid "$STATE/cassandra.pid"; }

# The three-node ring: node N on 127.0.0.N, each with its own JVM, data and JMX port; CQL and storage
# ports apart from the single node's, so both can run at once. Node 1 is the seed; the others join one
# after the other (Cassandra lets one node bootstrap at a time).
RING_CQL_PORT="${FACEGRID_RING_CQL_PORT:-9142}"
RING_STORAGE_PORT="${FACEGRID_RING_STORAGE_PORT:-7100}"
RING_HEAP="${FACEGRID_RING_HEAP:-512m}"
RING="$STATE/ring"

start_node() {
    local n="$1"
    case "$n" in 1|2|3) ;; *) die "ring nodes are 1, 2 and 3" ;; esac
    mkdir -p "$RING"
    launch_node "$RING/node$n" "127.0.0.$n" "$RING_CQL_PORT" "$RING_STORAGE_PORT" "$((7300 + n))" "$RING_HEAP" \
        "127.0.0.1:$RING_STORAGE_PORT" 3 "$RING/node$n.pid"
}

start_ring() { install_cassandra; for n in 1 2 3; do start_node "$n"; done; }
stop_ring() { for n in 1 2 3; do stop_pid "$RING/node$n.pid"; done; }
wipe_ring() { stop_ring; rm -rf "$RING"; }

case "${1:-}" in
    install) install_memcached; install_cassandra ;;
    start) install_memcached; install_cassandra; start_memcached; start_cassandra ;;
    stop) stop_memcached; stop_cassandra; stop_ring ;;
    status) answers 127.0.0.1 "$MEMCACHED_PORT" && say "memcached up" || say "memcached down"
            answers 127.0.0.1 "$CQL_PORT" && say "Cassandra up" || say "Cassandra down" ;;
    start-cassandra) start_cassandra ;;
    stop-cassandra) stop_cassandra ;;
    start-memcached) start_memcached ;;
    stop-memcached) stop_memcached ;;
    start-ring) start_ring ;;
    stop-ring) stop_ring ;;
    wipe-ring) wipe_ring ;;
    start-node) start_node "${2:?node 1, 2 or 3}" ;;
    stop-node) stop_pid "$RING/node${2:?node 1, 2 or 3}.pid" ;;
    kill-node) stop_pid "$RING/node${2:?node 1, 2 or 3}.pid" KILL ;;
    *) die "usage: $0 install|start|stop|status|start-cassandra|stop-cassandra|start-memcached|stop-memcached|start-ring|stop-ring|wipe-ring|start-node N|stop-node N|kill-node N" ;;
esac
