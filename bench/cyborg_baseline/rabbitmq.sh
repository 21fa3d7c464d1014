#!/usr/bin/env bash
# Run Debian's RabbitMQ (apt-get install rabbitmq-server) in the foreground for the Cyborg baseline,
# on ports of its own (AMQP $1, Erlang distribution $1+1, epmd $1+2) with all state under $2.
#   bench/cyborg_baseline/rabbitmq.sh PORT DIR
set -euo pipefail
PORT="$1"; DIR="$(realpath -m "$2")"
if ! [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; exit 3
fi
mkdir -p "$DIR/mnesia" "$DIR/log"
echo "[]." > "$DIR/enabled_plugins"
printf 'loopback_users = none\nlisteners.tcp.default = 127.0.0.1:%s\n' "$PORT" > "$DIR/rabbitmq.conf"
export HOME="$DIR" RABBITMQ_NODENAME="rayborgbench$PORT@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
       RABBITMQ_NODE_PORT="$PORT" RABBITMQ_DIST_PORT="$((PORT + 1))" ERL_EPMD_PORT="$((PORT + 2))" \
       ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE="$DIR/mnesia" RABBITMQ_LOG_BASE="$DIR/log" \
       RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
       RABBITMQ_PID_FILE="$DIR/rabbitmq.pid" RABBITMQ_LOGS=- RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1"
# our own epmd, in the foreground of this session (not a daemon that outlives the benchmark)
EPMD_BIN="$(ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -1)"
"${EPMD_BIN:-epmd}" -port "$ERL_EPMD_PORT" -address 127.0.0.1 &
sleep 0.3
exec /usr/lib/rabbitmq/bin/rabbitmq-server
