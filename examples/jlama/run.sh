#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the jlama example (jlama's Mixtral routed by moe-router) on a JDK 22+.
#
#   examples/jlama/run.sh [r3] [options]     R3 record/replay demo (JlamaR3; --help lists the options)
#   examples/jlama/run.sh bench [options]    routing-share benchmark and table (docs/benchmarks.md, "jlama");
#                                            --out FILE.json --shapes MIXTRAL,E64K8 --tokens 1,512 --wi 5 --i 7
#
# Environment: JLAMA_JDK  JDK 22+ to run with (default /usr/lib/jvm/temurin-25-jdk-amd64)
#              REBUILD=1  rebuild first (otherwise built when missing or older than the sources)
# Exit status: that of the program (JlamaR3: 0 replay exact, 1 not, 2 bad arguments).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
JDK=${JLAMA_JDK:-/usr/lib/jvm/temurin-25-jdk-amd64}
MOD="$ROOT/examples/jlama"
[[ -x "$JDK/bin/java" ]] || { echo "run.sh: no JDK at $JDK (set JLAMA_JDK to a JDK 22+)" >&2; exit 2; }

# Rebuilt when missing or older than a source of the library or of this module.
STAMP="$MOD/target/run.stamp"
if [[ ${REBUILD:-0} == 1 || ! -f "$STAMP" || -n $(find "$ROOT/pom.xml" "$ROOT/native" "$ROOT/java/pom.xml" "$ROOT/java/src/main" \
      "$MOD/pom.xml" "$MOD/src/main" -newer "$STAMP" -print -quit) ]]; then
  echo "[run.sh] building examples/jlama (mvn -B -q -Djdk22=$JDK -pl examples/jlama -am -DskipTests package)" >&2
  (cd "$ROOT" && mvn -B -q -Djdk22="$JDK" -pl examples/jlama -am -DskipTests package)
  touch "$STAMP"
fi

CP="$MOD/target/classes:$MOD/target/lib/*"
# The options this JDK needs to run jlama quietly (jdk-options.sh: Unsafe memory access on JDK 23+).
"$MOD/jdk-options.sh" "$JDK" "$MOD/target/jdk-options.args"
# JMH forks inherit these options.
JVM=("$JDK/bin/java" --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED
     -Dorg.bytedeco.javacpp.cachedir="$MOD/target/javacpp-cache" @"$MOD/target/jdk-options.args")
cmd=r3
if [[ $# -gt 0 && ( $1 == r3 || $1 == bench ) ]]; then cmd=$1; shift; fi
if [[ $cmd == bench ]]; then
  cd "$ROOT"
  exec "${JVM[@]}" -cp "$CP" org.moerouter.examples.jlama.bench.ShareReport "$@"
fi
exec "${JVM[@]}" -cp "$CP" org.moerouter.examples.jlama.JlamaR3 "$@"
