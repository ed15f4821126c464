#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds a self-contained GPU acceptance bundle: dist/moe-router-gpu-bundle.tar.gz with a jlink'd JRE,
# the library jar, its CUDA native jar (classifier linux-x86_64-cuda) and javacpp, the test classes and their non-JUnit test dependencies, the standalone
# JUnit console launcher, the goldens, the CUDA self-check and benchmark binaries, and
# run-gpu-checks.sh (one command on a GPU host that has only the NVIDIA driver).
#
#   scripts/build-gpu-bundle.sh [--prebuilt] [--self-test] [--quiet]
#
#   --prebuilt   use what `mvn package` already left in java/target (jar, runtime and test dependencies,
#                console launcher: the java module copies them in `package`) instead of running Maven
#   --self-test  then unpack the tarball in a temporary folder and run its run-gpu-checks.sh without a GPU
#                (MOE_REQUIRE_GPU=0): the bundle's CPU part must pass. `mvn verify` runs
#                `--prebuilt --self-test --quiet` (java/pom.xml), so the bundle cannot rot. Without CUDA
#                kernels (no nvcc) the self-test reports SKIPPED and exits 0.
#   --quiet      as a build step: everything goes to DIST_DIR/build-gpu-bundle.log; on success one summary
#                line is printed (nothing when skipped for want of nvcc, which the native build already
#                said), on failure the log's last 80 lines and its path. MOE_ROUTER_VERBOSE=1 prints all.
#
# Needs here: JDK 17+ (jlink), Maven, nvcc (CUDA 12+), cmake. The bundle's CUDA runtime is the static
# one of this nvcc: the GPU host's driver must support that CUDA version (CUDA 13 needs driver >= 580,
# CUDA 12 needs >= 525; see README). Environment:
#   CMAKE_CUDA_ARCHITECTURES  GPU architectures (default "80;90")
#   MOE_GOLDENS               goldens directory (default: ../shared/goldens next to the repository, else java/src/test/goldens)
#   MOE_GOLDENS_V2            goldens_v2 directory (default: ../shared/goldens_v2, else java/src/test/goldens_v2)
#   MVN_OFFLINE=1             run Maven offline (-o); the console launcher must then be in ~/.m2
#   DIST_DIR                  output directory (default <repo>/dist)
# Exit status: 0 on success, 1 on a failed step (the self-test's run-gpu-checks.sh status otherwise).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIST="${DIST_DIR:-$ROOT/dist}"
NAME=moe-router-gpu-bundle
STAGE="$DIST/$NAME"
export CMAKE_CUDA_ARCHITECTURES="${CMAKE_CUDA_ARCHITECTURES:-80;90}"
GOLDENS="${MOE_GOLDENS:-$ROOT/../shared/goldens}"
[[ -d "$GOLDENS" || -n "${MOE_GOLDENS:-}" ]] || GOLDENS="$ROOT/java/src/test/goldens"  # the copy in the repository
GOLDENS_V2="${MOE_GOLDENS_V2:-$ROOT/../shared/goldens_v2}"
[[ -d "$GOLDENS_V2" || -n "${MOE_GOLDENS_V2:-}" ]] || GOLDENS_V2="$ROOT/java/src/test/goldens_v2"
MVN=(mvn -B -q)
[[ "${MVN_OFFLINE:-0}" == "1" ]] && MVN+=(-o)
PREBUILT=0
SELF_TEST=0
QUIET=0
for arg in "$@"; do
  case "$arg" in
    --prebuilt) PREBUILT=1 ;;
    --self-test) SELF_TEST=1 ;;
    --quiet) QUIET=1 ;;
    *) echo "usage: $0 [--prebuilt] [--self-test] [--quiet]" >&2; exit 1 ;;
  esac
done

log() { echo "[gpu-bundle] $*"; }
die() { echo "[gpu-bundle] ERROR: $*" >&2; exit 1; }

# Everything that runs at exit: the self-test's folder, and in quiet mode the failure report.
check_dir=""
LOG=""
on_exit() {
  local status=$?
  [[ -n "$check_dir" ]] && rm -rf "$check_dir"
  if [[ -n "$LOG" ]] && ((status != 0)); then
    tail -n 80 "$LOG" >&4
    echo "[gpu-bundle] FAILED (exit $status); the whole log: $LOG" >&4
  fi
  return $status
}
trap on_exit EXIT
if ((QUIET)) && [[ "${MOE_ROUTER_VERBOSE:-0}" != 1 ]]; then
  mkdir -p "$DIST"
  LOG="$DIST/build-gpu-bundle.log"
  exec 3>&1 4>&2 >"$LOG" 2>&1
fi

# ---------------------------------------------------------------------------------- tools
command -v cmake >/dev/null || die "cmake not found"
JLINK="$(command -v jlink || true)"
[[ -n "$JLINK" ]] || { [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/jlink" ]] && JLINK="$JAVA_HOME/bin/jlink"; }
[[ -n "$JLINK" ]] || die "jlink not found (install a JDK, not a JRE)"
JAVA_TARGET="$ROOT/java/target"
DEPS="$JAVA_TARGET/bundle-deps"  # test-lib/ and junit/ (java/pom.xml, phase package)
if ((SELF_TEST)) && ! grep -q "moe-router: CUDA kernels ON" "$JAVA_TARGET/cmake.cmake.log" 2>/dev/null; then
  log "SKIPPED: the native library was built without CUDA kernels (no nvcc); a bundle needs them"
  exit 0
fi
if ! command -v nvcc >/dev/null 2>&1; then
  [[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH" || die "nvcc not found: the bundle needs the CUDA kernels"
fi
JUNIT_PLATFORM_VERSION="$(sed -n 's:.*<junit.platform.version>\(.*\)</junit.platform.version>.*:\1:p' "$ROOT/pom.xml" | head -1)"
[[ -n "$JUNIT_PLATFORM_VERSION" ]] || die "junit.platform.version not found in pom.xml"

# ---------------------------------------------------------------------------------- Maven build
if ((PREBUILT == 0)); then
  command -v mvn >/dev/null || die "mvn not found"
  log "Maven package (native CUDA build for sm ${CMAKE_CUDA_ARCHITECTURES}; tests compiled, not run)"
  (cd "$ROOT" && "${MVN[@]}" -DskipTests -Dbundle.skip=true package)
  [[ -d "$JAVA_TARGET/test-classes" ]] || (cd "$ROOT" && "${MVN[@]}" -pl java test-compile)
fi
[[ -f "$JAVA_TARGET/moe-router.jar" ]] || die "java/target/moe-router.jar missing (run mvn package first)"
[[ -f "$JAVA_TARGET/moe-router-linux-x86_64-cuda.jar" ]] ||
  die "java/target/moe-router-linux-x86_64-cuda.jar missing: the CUDA native jar (built when nvcc is found)"
[[ -d "$JAVA_TARGET/test-classes" ]] || die "java/target/test-classes missing"
[[ -d "$DEPS/test-lib" && -f "$DEPS/junit/junit-platform-console-standalone.jar" ]] ||
  die "test dependencies or the console launcher missing under $DEPS (java/pom.xml copies them in package)"
grep -q "moe-router: CUDA kernels ON" "$JAVA_TARGET/cmake.cmake.log" 2>/dev/null ||
  die "the native library was built without CUDA (see $JAVA_TARGET/cmake.cmake.log)"

# ---------------------------------------------------------------------------------- CUDA tools
log "moe_check / moe_bench (reusing the Maven CMake build directory)"
cmake --build "$JAVA_TARGET/cmake" --target moe_gpu_tools -j "$(nproc)"

# ---------------------------------------------------------------------------------- stage
rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/junit"
log "jlink JRE"
"$JLINK" --add-modules java.base,java.management,jdk.unsupported,java.logging,java.xml,java.scripting \
  --strip-debug --no-header-files --no-man-pages --compress=2 --output "$STAGE/jre"
cp "$JAVA_TARGET/moe-router.jar" "$JAVA_TARGET/moe-router-linux-x86_64-cuda.jar" "$STAGE/lib/"
cp "$JAVA_TARGET"/lib/*.jar "$STAGE/lib/"           # runtime dependencies (javacpp)
for j in "$DEPS"/test-lib/*.jar; do                 # test-only dependencies not already there
  [[ -e "$j" ]] || continue
  [[ -e "$STAGE/lib/$(basename "$j")" ]] || cp "$j" "$STAGE/lib/"
done
rm -f "$STAGE"/lib/moe-router-[0-9]*.jar             # never a second copy of the product
cp -r "$JAVA_TARGET/test-classes" "$STAGE/test-classes"
cp "$DEPS/junit/junit-platform-console-standalone.jar" "$STAGE/junit/"
cp "$JAVA_TARGET/cmake/native/moe_check" "$JAVA_TARGET/cmake/native/moe_bench" "$STAGE/bin/"
cp "$ROOT/scripts/run-gpu-checks.sh" "$STAGE/"
CUDA_RUNTIME="$(nvcc --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p' | head -1)"
echo "$CUDA_RUNTIME" >"$STAGE/cuda-runtime-version"   # read by run-gpu-checks.sh (driver check)
chmod +x "$STAGE/run-gpu-checks.sh" "$STAGE"/bin/*
if [[ -d "$GOLDENS" ]]; then
  cp -r "$GOLDENS" "$STAGE/goldens"
else
  log "WARNING: goldens not found at $GOLDENS (set MOE_GOLDENS); the golden test will fail on the GPU host"
  mkdir -p "$STAGE/goldens"
fi
[[ -d "$GOLDENS_V2" ]] || die "goldens_v2 not found at $GOLDENS_V2 (set MOE_GOLDENS_V2): GoldenV2Test needs them"
cp -r "$GOLDENS_V2" "$STAGE/goldens_v2"
{
  echo "moe-router GPU bundle"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "cuda archs: $CMAKE_CUDA_ARCHITECTURES; nvcc: $(nvcc --version | tail -1)"
  echo "cuda runtime: $CUDA_RUNTIME (static; the driver must support it: CUDA 13 needs >= 580, CUDA 12 >= 525)"
  echo "java: $("$STAGE/jre/bin/java" -version 2>&1 | head -1)"
  echo
  echo "Run on a GPU host (needs only the NVIDIA driver):"
  echo "  tar xzf $NAME.tar.gz && cd $NAME && ./run-gpu-checks.sh"
  echo "MOE_REQUIRE_GPU=0 runs the CPU parts without a GPU; see run-gpu-checks.sh for other switches."
} >"$STAGE/BUNDLE.txt"

log "tarball"
tar -C "$DIST" -czf "$DIST/$NAME.tar.gz" "$NAME"
log "$(du -sh "$STAGE" | cut -f1) staged, $(du -h "$DIST/$NAME.tar.gz" | cut -f1) compressed: $DIST/$NAME.tar.gz"
log "on the GPU host: tar xzf $NAME.tar.gz && cd $NAME && ./run-gpu-checks.sh"

if ((SELF_TEST)); then
  check_dir="$(mktemp -d)"
  log "self-test: unpacking into $check_dir and running run-gpu-checks.sh with MOE_REQUIRE_GPU=0"
  tar -C "$check_dir" -xzf "$DIST/$NAME.tar.gz"
  # From the unpacked folder, as on a GPU host: nothing may be found relative to the checkout.
  (cd "$check_dir" && MOE_REQUIRE_GPU=0 MOE_RUN_BENCH=0 "$check_dir/$NAME/run-gpu-checks.sh")
fi
if [[ -n "$LOG" ]]; then
  # One line: the self-test's summary (PASS/SKIP lines and RESULT) as run-gpu-checks.sh printed it.
  result="bundle built"
  if ((SELF_TEST)); then
    result="self-test: $(sed -n '/^=================== summary$/,/^RESULT: /p' "$LOG" | sed '1d; s/^ *//' | tr -s ' ' |
      paste -sd ';' - | sed 's/;/; /g')"
  fi
  echo "[gpu-bundle] $result (log: $LOG)" >&3
fi
