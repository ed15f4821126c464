#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Short JMH profile of moe-router (issue #6): live routing, replay and backward per backend, config,
# batch size and dtype, plus the JNI overhead benchmark; prints the ns/token table with the
# replay/live and native/Java ratios and flags rows that miss a target (it never fails on them).
#
#   scripts/bench-profile.sh                 # reduced grid, a few minutes on a 2-core machine
#   scripts/bench-profile.sh --full          # full grid (T up to 65536, backward everywhere); much longer
#   scripts/bench-profile.sh --rebuild ...   # rebuild benchmarks.jar first
#   scripts/bench-profile.sh --backends CPU --configs e256k8g --tokens 4096 --dtypes bf16   # one slice
#   scripts/bench-profile.sh --cpu-goals     # issue 16: CPU vs floor, ONNX Runtime, Java, 1 and 2 threads (~10 min)
#
# Other options go to org.moerouter.bench.BenchMain (--help): --out FILE.json (default
# benchmarks/target/bench-profile.json), --table FILE.md (default: --out with .md), --no-backward,
# --no-jni, and JMH timing --forks/--wi/--w/--i/--r (defaults 1 fork, 2 x 200 ms warm-up, 3 x 300 ms).
# CUDA is in the grid only when a GPU is visible (NativeLibrary.cudaDeviceCount() > 0).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JAR="$ROOT/benchmarks/target/benchmarks.jar"

rebuild=0
have_out=0
args=()
for a in "$@"; do
  case "$a" in
    --rebuild) rebuild=1 ;;
    --out) have_out=1; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
goals=0
for a in "${args[@]}"; do [[ "$a" == --cpu-goals ]] && goals=1; done
[[ $have_out == 1 ]] || args=(--out "$ROOT/benchmarks/target/$([[ $goals == 1 ]] && echo cpu-goals || echo bench-profile).json" ${args[@]+"${args[@]}"})

if [[ $rebuild == 1 || ! -f "$JAR" ]]; then
  echo "[bench-profile] building $JAR (mvn -B -q -DskipTests package)"
  (cd "$ROOT" && mvn -B -q -DskipTests package)
fi

JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
# benchmarks.jar has the CPU kernels; the CUDA jar, where the build made one, is preferred by the loader.
CP="$JAR"
CUDA_JAR="$ROOT/java/target/moe-router-linux-x86_64-cuda.jar"
[[ -f "$CUDA_JAR" ]] && CP="$CUDA_JAR:$CP"
# The JVM options below are inherited by the JMH forks; the JavaCPP cache stays inside the build tree.
exec "$JAVA" -Dorg.bytedeco.javacpp.cachedir="$ROOT/benchmarks/target/javacpp-cache" \
  -cp "$CP" org.moerouter.bench.BenchMain "${args[@]}"
