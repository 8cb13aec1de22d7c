#!/bin/sh
# Write cassandra.yaml from the environment and run the node in the foreground.
#
# The variables are the official cassandra image's (docker-stack.yml sets
# them), so the stack runs unchanged on either image:
#   CASSANDRA_CLUSTER_NAME     default "Test Cluster"
#   CASSANDRA_SEEDS            comma-separated names or addresses; default: this node
#   CASSANDRA_LISTEN_ADDRESS   default: the address this container's name resolves to
#   CASSANDRA_BROADCAST_ADDRESS, CASSANDRA_BROADCAST_RPC_ADDRESS   default: the listen address
#   CASSANDRA_RPC_ADDRESS      default 0.0.0.0 (CQL on every interface)
#   CASSANDRA_NUM_TOKENS       default 16
#   CASSANDRA_ENDPOINT_SNITCH  default SimpleSnitch
#   CASSANDRA_DC, CASSANDRA_RACK   for GossipingPropertyFileSnitch; default dc1, rack1
#   MAX_HEAP_SIZE              default 1G (-Xms and -Xmx)
#   HEAP_NEWSIZE               accepted and ignored: G1 sizes its young generation itself
#   JVM_EXTRA_OPTS             more JVM flags, appended
#   CASSANDRA_COMMITLOG_SYNC   default group (fsync before acknowledging, in 15 ms
#                              groups); "periodic" is Cassandra's own default
# Why group: with periodic sync a killed node replays its commit log only up to
# the last sync (up to 10 s earlier); a counter leader that forgot its last
# increments reuses their clocks, and the other replicas' copies of them lose
# at reconciliation, so acknowledged increments vanish (tracker's Swarm test
# saw it: docs/docker.md). Rows lose nothing either way (other replicas).
# The task's address changes with every container, so the files are written
# at each start; the node's identity (host id, tokens) lives in the volume.
set -eu
conf=/etc/cassandra
data=/var/lib/cassandra

commitlog_sync() {
    case "${CASSANDRA_COMMITLOG_SYNC:-group}" in
        group) printf 'commitlog_sync: group\ncommitlog_sync_group_window: 15ms\n' ;;
        periodic) printf 'commitlog_sync: periodic\ncommitlog_sync_period: 10000ms\n' ;;
        *) echo "cassandra-entrypoint: CASSANDRA_COMMITLOG_SYNC must be group or periodic" >&2
           exit 1 ;;
    esac
}

sync_yaml="$(commitlog_sync)"

address="${CASSANDRA_LISTEN_ADDRESS:-auto}"
if [ "$address" = auto ]; then
    # /etc/hosts maps the container's name to its address on its first network.
    address="$(getent hosts "$(cat /etc/hostname)" | awk '{print $1; exit}')"
fi
[ -n "$address" ] || { echo "cassandra-entrypoint: no address for $(cat /etc/hostname)" >&2; exit 1; }
broadcast="${CASSANDRA_BROADCAST_ADDRESS:-$address}"

mkdir -p "$data/data" "$data/commitlog" "$data/saved_caches" "$data/hints" "$data/cdc_raw"

cat > "$conf/cassandra.yaml" <<YAML
cluster_name: '${CASSANDRA_CLUSTER_NAME:-Test Cluster}'
num_tokens: ${CASSANDRA_NUM_TOKENS:-16}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: ${CASSANDRA_ENDPOINT_SNITCH:-SimpleSnitch}
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "${CASSANDRA_SEEDS:-$broadcast}"
listen_address: $address
broadcast_address: $broadcast
rpc_address: ${CASSANDRA_RPC_ADDRESS:-0.0.0.0}
broadcast_rpc_address: ${CASSANDRA_BROADCAST_RPC_ADDRESS:-$broadcast}
storage_port: 7000
native_transport_port: 9042
start_native_transport: true
data_file_directories:
  - $data/data
commitlog_directory: $data/commitlog
saved_caches_directory: $data/saved_caches
hints_directory: $data/hints
cdc_raw_directory: $data/cdc_raw
$sync_yaml
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
YAML

# GossipingPropertyFileSnitch reads this from the class path ($conf is on it).
cat > "$conf/cassandra-rackdc.properties" <<PROPS
dc=${CASSANDRA_DC:-dc1}
rack=${CASSANDRA_RACK:-rack1}
PROPS

heap="${MAX_HEAP_SIZE:-1G}"
jamm="$(ls /opt/cassandra/lib/jamm-*.jar | head -n 1)"
# shellcheck disable=SC2046,SC2086  # one flag per line in jvm-options; JVM_EXTRA_OPTS is split on purpose
exec java $(cat /opt/cassandra/conf/jvm-options) "-Xms$heap" "-Xmx$heap" \
    "-javaagent:$jamm" \
    "-Dcassandra.config=file://$conf/cassandra.yaml" \
    "-Dcassandra.storagedir=$data" "-Dcassandra.logdir=$data/logs" \
    "-Dlogback.configurationFile=/opt/cassandra/conf/logback.xml" \
    -Djava.io.tmpdir=/tmp -Djna.tmpdir=/tmp \
    ${JVM_EXTRA_OPTS:-} \
    -cp "$conf:/opt/cassandra/lib/*" org.apache.cassandra.service.CassandraDaemon
