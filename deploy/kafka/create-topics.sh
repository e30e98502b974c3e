#!/bin/sh
# Creates the topics of BTS Guru before any worker or edge starts, with the
# partition count every process is configured with and the retention of the
# partner contract (docs/topics.md). Safe to run again: existing topics are kept.
#
#   KAFKA_BOOTSTRAP      host:port of a broker
#   BTS_TOPIC_PREFIX     the prefix the workers and edges use (may be empty)
#   BTS_PARTITIONS       the partition count the workers and edges use
#   BTS_APP_ID           the Faust app id the workers use (names the table changelog)
#   REPLICATION_FACTOR   1 on a single broker, 3 on a production cluster
#   KAFKA_CLIENT_CONFIG  optional client properties file (SASL / TLS)
set -eu

BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
PREFIX="${BTS_TOPIC_PREFIX:-}"
PARTITIONS="${BTS_PARTITIONS:?BTS_PARTITIONS must be set}"
APP_ID="${BTS_APP_ID:-bts-guru}"
REPLICATION="${REPLICATION_FACTOR:-1}"
COMMAND_CONFIG=""
if [ -n "${KAFKA_CLIENT_CONFIG:-}" ]; then
  COMMAND_CONFIG="--command-config ${KAFKA_CLIENT_CONFIG}"
fi

# create NAME [KEY=VALUE ...]
create() {
  name="${PREFIX}$1"
  shift
  configs=""
  for c in "$@"; do
    configs="$configs --config $c"
  done
  echo "topic ${name}: ${PARTITIONS} partitions, replication ${REPLICATION}${configs}"
  # shellcheck disable=SC2086
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" $COMMAND_CONFIG \
    --create --if-not-exists --topic "$name" \
    --partitions "$PARTITIONS" --replication-factor "$REPLICATION" $configs
}

# The same settings as tables/topics.py (TOPIC_CONFIG); tests/test_deploy.py keeps them equal.
create raw-fetches cleanup.policy=delete retention.ms=86400000
create match-updates
create match-deltas cleanup.policy=delete retention.ms=604800000
create match-snapshots cleanup.policy=compact
create dead-letters cleanup.policy=delete retention.ms=1209600000

# The detect agent's table (last snapshot and seq of every match). Faust would
# create it with replication 1; created here it gets REPLICATION_FACTOR. Never
# delete it: the workers' state is rebuilt from it.
create "${APP_ID}-matches-changelog" cleanup.policy=compact
