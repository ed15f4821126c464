#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# GPU acceptance checks of a moe-router bundle (made by scripts/build-gpu-bundle.sh). Needs only the
# NVIDIA driver on the host: no Java, Maven or network (the bundle carries a jlink'd JRE).
#
#   ./run-gpu-checks.sh
#
# Steps: nvidia-smi, the driver against the bundle's CUDA runtime (cuda-runtime-version: CUDA 13 needs
# driver >= 580, CUDA 12 >= 525; a mismatch is reported plainly and stops the GPU steps), moe_check
# (CUDA vs CPU through the C ABI, with the goldens), compute-sanitizer memcheck and racecheck over
# `moe_check --quick` (when compute-sanitizer is installed), the JUnit suite with the `gpu`-tagged
# tests required to run, and the benchmark table. Without a GPU (MOE_REQUIRE_GPU=0) moe_check must
# start and say why no device is usable (exit 2), and the JUnit suite runs with the GPU tests skipped.
# Exit status: 0 when every step passed, 1 when a step failed, 3 when no GPU was found.
#
# Environment:
#   MOE_REQUIRE_GPU=0     no GPU is not an error: run the CPU parts (JUnit; gpu tests skipped)
#   MOE_RUN_BENCH=0       skip the benchmark          MOE_BENCH_ARGS   e.g. "--iters 100"
#   MOE_RUN_SANITIZER=0   skip compute-sanitizer      MOE_LOG_DIR      logs (default ./logs)
#   JUNIT_ARGS            extra arguments for the JUnit console launcher (e.g. "--include-tag gpu")
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQUIRE_GPU="${MOE_REQUIRE_GPU:-1}"
RUN_BENCH="${MOE_RUN_BENCH:-1}"
RUN_SANITIZER="${MOE_RUN_SANITIZER:-1}"
LOG_DIR="${MOE_LOG_DIR:-$HERE/logs}"
mkdir -p "$LOG_DIR" || { echo "cannot create log directory $LOG_DIR" >&2; exit 1; }

failures=()
passed=()
skipped=()

# step NAME COMMAND...: runs COMMAND, tees its output to LOG_DIR/NAME.log, records the outcome.
step() {
  local name="$1"
  shift
  echo
  echo "=================== $name: $*"
  "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  local rc=${PIPESTATUS[0]}
  if ((rc != 0)); then
    failures+=("$name (exit $rc, log $LOG_DIR/$name.log)")
    echo "=================== $name: FAILED (exit $rc)"
  else
    passed+=("$name")
    echo "=================== $name: ok"
  fi
}

summary() {
  echo
  echo "=================== summary"
  local s
  for s in "${passed[@]+"${passed[@]}"}"; do echo "  PASS  $s"; done
  for s in "${skipped[@]+"${skipped[@]}"}"; do echo "  SKIP  $s"; done
  for s in "${failures[@]+"${failures[@]}"}"; do echo "  FAIL  $s"; done
  if ((${#failures[@]})); then
    echo "RESULT: FAILED (${#failures[@]} step(s))"
    exit 1
  fi
  echo "RESULT: OK"
  exit 0
}

# ---------------------------------------------------------------------------------- GPU present?
have_gpu=0
gpu_why=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
  gpu_why="nvidia-smi not found (no NVIDIA driver installed?)"
elif ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
  gpu_why="nvidia-smi lists no GPU: $(nvidia-smi -L 2>&1 | head -1)"
else
  have_gpu=1
fi

# The bundle's static CUDA runtime needs a driver that supports its CUDA version.
runtime_version="$(cat "$HERE/cuda-runtime-version" 2>/dev/null || echo unknown)"
driver_ok=1
if ((have_gpu)); then
  driver_version="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
  driver_cuda="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -1)"
  echo "driver ${driver_version:-unknown} (supports CUDA ${driver_cuda:-unknown}); bundle CUDA runtime $runtime_version"
  if [[ -n "$driver_cuda" && "$runtime_version" != unknown ]] &&
     [[ "$(printf '%s\n%s\n' "$driver_cuda" "$runtime_version" | sort -V | head -1)" != "$runtime_version" ]]; then
    need="a newer driver"
    [[ "${runtime_version%%.*}" == 13 ]] && need="driver >= 580"
    [[ "${runtime_version%%.*}" == 12 ]] && need="driver >= 525"
    echo "ERROR: driver/runtime mismatch: the NVIDIA driver ${driver_version:-?} supports CUDA $driver_cuda, but this" >&2
    echo "       bundle carries the CUDA $runtime_version runtime, which needs $need. Update the driver, or build" >&2
    echo "       the bundle with an older CUDA toolkit (README: GPU bundle). GPU steps skipped." >&2
    failures+=("driver: supports CUDA $driver_cuda < bundle runtime $runtime_version ($need)")
    driver_ok=0
  fi
fi

if ((have_gpu == 0)); then
  if [[ "$REQUIRE_GPU" != "0" ]]; then
    echo "ERROR: no GPU found: $gpu_why" >&2
    echo "       (set MOE_REQUIRE_GPU=0 to run only the CPU parts of the checks)" >&2
    exit 3
  fi
  echo "WARNING: no GPU found ($gpu_why); MOE_REQUIRE_GPU=0: running the CPU parts only"
  skipped+=("nvidia-smi, moe_check, compute-sanitizer, bench (no GPU)")
  # The binary must still load and explain itself: exit 2 with the reason.
  no_device_check() {
    "$HERE/bin/moe_check" --quick
    local rc=$?
    ((rc == 2)) && return 0
    echo "moe_check without a device exited $rc (expected 2: no device)"
    return 1
  }
  step moe_check-no-device no_device_check
elif ((driver_ok)); then
  step nvidia-smi nvidia-smi
  step moe_check "$HERE/bin/moe_check" --goldens "$HERE/goldens"
  if [[ "$RUN_SANITIZER" != "0" ]]; then
    sanitizer="$(command -v compute-sanitizer 2>/dev/null || true)"
    if [[ -z "$sanitizer" ]]; then
      for cand in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
                  /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
        [[ -x "$cand" ]] && { sanitizer="$cand"; break; }
      done
    fi
    if [[ -n "$sanitizer" ]]; then
      step memcheck "$sanitizer" --tool memcheck --leak-check full --error-exitcode 1 "$HERE/bin/moe_check" --quick
      step racecheck "$sanitizer" --tool racecheck --racecheck-report hazard --error-exitcode 1 \
        "$HERE/bin/moe_check" --quick
    else
      skipped+=("compute-sanitizer (not installed on this host)")
    fi
  else
    skipped+=("compute-sanitizer (MOE_RUN_SANITIZER=0)")
  fi
fi

# ---------------------------------------------------------------------------------- JUnit
require_prop=true
[[ "$have_gpu" == 1 && "$driver_ok" == 1 ]] || require_prop=false
cp="$HERE/test-classes"
for j in "$HERE"/lib/*.jar; do cp="$cp:$j"; done
step junit "$HERE/jre/bin/java" --enable-native-access=ALL-UNNAMED \
  "-Dorg.bytedeco.javacpp.cachedir=${MOE_JAVACPP_CACHE:-$HERE/.javacpp-cache}" \
  "-Dmoerouter.requireGpu=$require_prop" "-Dmoerouter.goldens=$HERE/goldens" "-Dmoerouter.goldens.v2=$HERE/goldens_v2" \
  -Dmoerouter.simt=skip \
  -jar "$HERE/junit/junit-platform-console-standalone.jar" execute \
  --disable-banner --disable-ansi-colors --details=tree --fail-if-no-tests --reports-dir="$LOG_DIR/junit-reports" \
  -cp "$cp" --scan-classpath "$HERE/test-classes" ${JUNIT_ARGS:-}

# ---------------------------------------------------------------------------------- bench
if ((have_gpu && driver_ok)); then
  if [[ "$RUN_BENCH" != "0" ]]; then
    # shellcheck disable=SC2086
    step bench "$HERE/bin/moe_bench" ${MOE_BENCH_ARGS:-}
  else
    skipped+=("bench (MOE_RUN_BENCH=0)")
  fi
fi

summary
