#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the static kernel libraries with CMake (called by the javacpp-maven-plugin in `initialize`), one
# per native artifact; each JNI library links its variant's libmoe_router_all.a the same way:
#   PREFIX/cpu/lib/libmoe_router_all.a    CPU backend + CUDA stub (classifier linux-x86_64), always
#   PREFIX/cuda/lib/libmoe_router_all.a   CPU backend + CUDA kernels + the static CUDA runtime
#                                         (classifier linux-x86_64-cuda), only when the kernels were built
#   PREFIX/lib/libmoe_glibc_floor.a       symbol-version pins both link (native/compat)
#   PREFIX/variants.properties            native.cuda.skip=true|false, read by Maven (java/pom.xml) to
#                                         link and package the CUDA artifact or not
# Both variants share the CPU objects: the CUDA one costs only the kernels and a second JNI link.
# Arguments: SRC (repository root), BUILD (CMake build dir), PREFIX (install prefix), and optionally OUT
# (the native jars' content, java/target/native), emptied here so that no jar keeps a stale library (a CUDA
# library from an earlier build when this one has no CUDA).
# Environment: MOE_ROUTER_CUDA=OFF skips the CUDA kernels (and the CUDA artifact); MOE_ROUTER_VERBOSE=1
# prints the build steps (by default only problems are printed: compiler warnings, a missing nvcc, a
# failed step's whole log).
# Exit codes: 0 built, non-zero when a step failed (its log is printed).
set -euo pipefail
SRC="${1:?source dir}"; BUILD="${2:?build dir}"; PREFIX="${3:?install prefix}"; OUT="${4:-}"
mkdir -p "$(dirname "$BUILD")"
if [[ -z "${CMAKE_CUDA_COMPILER:-}" ]] && ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export CMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc
fi
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX" \
      ${CMAKE_CUDA_ARCHITECTURES:+-DCMAKE_CUDA_ARCHITECTURES=$CMAKE_CUDA_ARCHITECTURES} \
      ${MOE_ROUTER_CUDA:+-DMOE_ROUTER_CUDA=$MOE_ROUTER_CUDA} ${MOE_ROUTER_SIMT:+-DMOE_ROUTER_SIMT=$MOE_ROUTER_SIMT} \
      >"$BUILD.cmake.log" 2>&1 \
  || { cat "$BUILD.cmake.log"; exit 1; }
# Quiet unless something is wrong: a clean build prints nothing (MOE_ROUTER_VERBOSE=1 shows the steps).
if [[ "${MOE_ROUTER_VERBOSE:-0}" == 1 ]]; then
  grep -E "moe-router:" "$BUILD.cmake.log" || true
  cmake --build "$BUILD" --target install -j "$(nproc)"
else
  cmake --build "$BUILD" --target install -j "$(nproc)" >"$BUILD.build.log" 2>&1 \
    || { cat "$BUILD.build.log"; exit 1; }
  # Compiler warnings are problems: show them even when the build succeeded.
  grep -iE "warning[: ]" "$BUILD.build.log" || true
fi
if grep -q "^MOE_ROUTER_CUDA:BOOL=ON" "$BUILD/CMakeCache.txt" && grep -q "moe-router: CUDA kernels OFF" "$BUILD.cmake.log"; then
  echo "[build-native] warning: nvcc not found: building only the CPU artifact (classifier linux-x86_64), no" \
       "linux-x86_64-cuda jar (install the CUDA toolkit or put nvcc on PATH; MOE_ROUTER_CUDA=OFF silences this)" >&2
fi

cudart=""
if grep -q "moe-router: CUDA kernels ON" "$BUILD.cmake.log"; then
  nvcc_path=$(sed -n 's/^CMAKE_CUDA_COMPILER:FILEPATH=//p' "$BUILD/CMakeCache.txt")
  for cand in "$(dirname "$(readlink -f "$nvcc_path")")/../lib64/libcudart_static.a" \
              "$(dirname "$(readlink -f "$nvcc_path")")/../targets/x86_64-linux/lib/libcudart_static.a" \
              /usr/local/cuda/lib64/libcudart_static.a; do
    if [[ -f "$cand" ]]; then cudart=$(readlink -f "$cand"); break; fi
  done
  [[ -n "$cudart" ]] || { echo "[build-native] CUDA kernels built but libcudart_static.a not found" >&2; exit 1; }
fi
# archive DEST LIB...: one static library holding the members of the LIBs (an MRI script, as ar writes them).
archive() {
  local out="$1"
  shift
  mkdir -p "$(dirname "$out")"
  {
    echo "CREATE $out.tmp"
    for lib in "$@"; do echo "ADDLIB $lib"; done
    echo "SAVE"
    echo "END"
  } | ar -M
  mv "$out.tmp" "$out"
}
archive "$PREFIX/cpu/lib/libmoe_router_all.a" "$PREFIX/lib/libmoe_router_kernels_cpu.a"
if [[ -n "$cudart" ]]; then
  archive "$PREFIX/cuda/lib/libmoe_router_all.a" "$PREFIX/lib/libmoe_router_kernels.a" "$cudart"
  cuda_skip=false
else
  rm -rf "$PREFIX/cuda"  # from an earlier build with CUDA: not this build's
  cuda_skip=true
fi
rm -f "$PREFIX/lib/libmoe_router_all.a"  # the single library of earlier layouts
if [[ -n "$OUT" ]]; then rm -rf "$OUT"; fi
printf '%s\n' "# Written by scripts/build-native.sh: which native artifacts this build links." \
  "native.cuda.skip=$cuda_skip" >"$PREFIX/variants.properties"
if [[ "${MOE_ROUTER_VERBOSE:-0}" == 1 ]]; then
  echo "[build-native] $PREFIX/cpu/lib/libmoe_router_all.a (CPU backend, CUDA stub)"
  if [[ -n "$cudart" ]]; then
    echo "[build-native] $PREFIX/cuda/lib/libmoe_router_all.a (CPU backend, CUDA kernels, $cudart)"
  fi
fi
