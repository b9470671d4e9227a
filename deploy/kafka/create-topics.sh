#!/usr/bin/env bash
# One-shot topic creation for docker-compose (runs in the apache/kafka image). Idempotent.
# Names and partition counts come from the same KAIROS_* variables the worker reads
# (stream/settings/); the defaults below are Settings' defaults. tests/ops checks they agree with
# stream/topics.py. User-keyed topics share one partition count so a user's events, consent and pushes
# land on the same partition number.
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
PARTITIONS="${KAIROS_TOPICS__PARTITIONS:-4}"
RF="${KAIROS_TOPICS__REPLICATION_FACTOR:-1}"
APP_ID="${KAIROS_WORKER__APP_ID:-kairos}"
KAFKA_TOPICS="${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}"

create_topic() {  # create_topic NAME PARTITIONS [CONFIG=VALUE ...]
  local name="$1" partitions="$2"
  shift 2
  local configs=()
  for config in "$@"; do configs+=(--config "$config"); done
  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$name" \
    --partitions "$partitions" --replication-factor "$RF" "${configs[@]}"
}

create_topic "${KAIROS_TOPICS__EVENTS:-events}" "$PARTITIONS"
create_topic "${KAIROS_TOPICS__CONSENT:-consent}" "$PARTITIONS" cleanup.policy=compact
create_topic "${KAIROS_TOPICS__PUSHES:-pushes}" "$PARTITIONS"
create_topic "${KAIROS_TOPICS__DECISIONS:-push-decisions}" "$PARTITIONS"
# A day of superseded catalog versions stays uncompacted (stream/topics.py: CATALOG).
create_topic "${KAIROS_TOPICS__CATALOG:-catalog}" 1 cleanup.policy=compact min.compaction.lag.ms=86400000
create_topic "${KAIROS_TOPICS__DEAD_LETTERS:-dead-letters}" 1

# The user-state changelog (stream.topics.changelog_topic): one partition per events partition, compacted.
create_topic "${APP_ID}-user-state-changelog" "$PARTITIONS" cleanup.policy=compact

"$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --list
