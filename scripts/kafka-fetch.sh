#!/usr/bin/env bash
# Downloads the jars of a single-node Apache Kafka broker (KRaft) from Maven
# Central into .kafka/libs (gitignored). No Docker, no tarball: Maven resolves
# kafka_2.13 and its runtime dependencies. Idempotent: does nothing when the
# jars are already there (delete .kafka/libs to refetch).
#
# Usage: scripts/kafka-fetch.sh            (KAFKA_VERSION=4.1.1 by default)
#        KAFKA_VERSION=4.0.0 scripts/kafka-fetch.sh
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kafka_home="${KAFKA_HOME_DIR:-$repo_root/.kafka}"
libs="$kafka_home/libs"
version="${KAFKA_VERSION:-4.1.1}"

if compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
  echo "kafka-fetch: jars already in $libs ($(ls "$libs" | wc -l) files)"
  exit 0
fi
command -v mvn >/dev/null || { echo "kafka-fetch: mvn not found (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "kafka-fetch: java not found (apt-get install default-jre-headless)" >&2; exit 1; }

mkdir -p "$libs"
start=$(date +%s)
mvn -q -B -f "$repo_root/scripts/kafka/pom.xml" \
  -Dkafka.version="$version" \
  dependency:copy-dependencies \
  -DincludeScope=runtime \
  -DoutputDirectory="$libs"
echo "kafka-fetch: Kafka $version, $(ls "$libs" | wc -l) jars in $libs ($(( $(date +%s) - start )) s)"
