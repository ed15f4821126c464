#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the static kernel library with CMake (called by the javacpp-maven-plugin in `initialize`).
# Output: PREFIX/lib/libmoe_router_all.a = kernels + (when built with CUDA) the static CUDA runtime,
# so the JNI library links the same way with or without nvcc.
# Arguments: SRC (repository root), BUILD (CMake build dir), PREFIX (install prefix).
# Environment: MOE_ROUTER_CUDA=OFF skips the CUDA kernels; MOE_ROUTER_VERBOSE=1 prints the build steps
# (by default only problems are printed: compiler warnings, a missing nvcc, a failed step's whole log).
# Exit codes: 0 built, non-zero when a step failed (its log is printed).
set -euo pipefail
SRC="${1:?source dir}"; BUILD="${2:?build dir}"; PREFIX="${3:?install prefix}"
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
  echo "[build-native] warning: nvcc not found: the library has no CUDA kernels (MOE_ROUTER_CUDA=OFF silences this)" >&2
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
{
  echo "CREATE $PREFIX/lib/libmoe_router_all.a.tmp"
  echo "ADDLIB $PREFIX/lib/libmoe_router_kernels.a"
  [[ -n "$cudart" ]] && echo "ADDLIB $cudart"
  echo "SAVE"
  echo "END"
} | ar -M
mv "$PREFIX/lib/libmoe_router_all.a.tmp" "$PREFIX/lib/libmoe_router_all.a"
if [[ "${MOE_ROUTER_VERBOSE:-0}" == 1 ]]; then
  echo "[build-native] $PREFIX/lib/libmoe_router_all.a (cudart: ${cudart:-none})"
fi
