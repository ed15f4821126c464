#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the static kernel library with CMake (called by the javacpp-maven-plugin in `initialize`).
# Output: PREFIX/lib/libmoe_router_all.a = kernels + (when built with CUDA) the static CUDA runtime,
# so the JNI library links the same way with or without nvcc.
set -euo pipefail
SRC="${1:?source dir}"; BUILD="${2:?build dir}"; PREFIX="${3:?install prefix}"
mkdir -p "$(dirname "$BUILD")"
if [[ -z "${CMAKE_CUDA_COMPILER:-}" ]] && ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export CMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc
fi
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX" \
      ${CMAKE_CUDA_ARCHITECTURES:+-DCMAKE_CUDA_ARCHITECTURES=$CMAKE_CUDA_ARCHITECTURES} \
      ${MOE_ROUTER_CUDA:+-DMOE_ROUTER_CUDA=$MOE_ROUTER_CUDA} >"$BUILD.cmake.log" 2>&1 \
  || { cat "$BUILD.cmake.log"; exit 1; }
grep -E "moe-router:" "$BUILD.cmake.log" || true
cmake --build "$BUILD" --target install -j "$(nproc)"

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
echo "[build-native] $PREFIX/lib/libmoe_router_all.a (cudart: ${cudart:-none})"
