#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Shows that the SIMT harness can fail: plants known bugs in a temporary copy of the CUDA sources,
# rebuilds moe_check_simt there and expects a failing run for each (docs/cuda-harness.md has the
# last results). The unmodified copy must pass first. Not part of `mvn verify` (a few minutes).
#
#   scripts/simt-mutations.sh [ORDER...]      orders: forward reverse random:SEED (default: forward reverse)
#
# Environment: SIMT_MUTATION_SECTIONS (default "sweep,edges"), KEEP_WORK=1 keeps the temporary tree.
# Exit status: 0 when every mutation was caught in at least one order, 1 otherwise, 2 on setup errors.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORDERS=("$@")
((${#ORDERS[@]})) || ORDERS=(forward reverse)
SECTIONS="${SIMT_MUTATION_SECTIONS:-sweep,edges}"
WORK="$(mktemp -d)"
[[ "${KEEP_WORK:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src"
cp -r "$ROOT/CMakeLists.txt" "$ROOT/native" "$WORK/src/"

# name | file under native/ | perl substitution (applied once; it must change the file)
MUTATIONS=(
  "lane index: sigmoid weight sum reads lane j+1|src/cuda/moe_cuda_common.cuh|s/__shfl_sync\(kFull, s0, base \+ j\)/__shfl_sync(kFull, s0, base + j + 1)/"
  "lane index: post-softmax sum reads lane j^1|src/cuda/moe_cuda_common.cuh|s/__shfl_sync\(kFull, e0, base \+ j\)/__shfl_sync(kFull, e0, base + (j ^ 1))/"
  "removed __syncthreads: block max before reading the per-warp maxima|src/cuda/moe_cuda_common.cuh|s/(sh->u64\[warp\] = v;\n)(\s*)__syncthreads\(\);\n/\$1/"
  "removed __syncthreads: softmax sum broadcast|src/cuda/moe_cuda_common.cuh|s/if \(TW > 1\) \{\n(\s*)__syncthreads\(\);\n/if (TW > 1) {\n/"
)

build() {
  cmake --build "$WORK/build" --target moe_check_simt -j "$(nproc)" >"$WORK/build.log" 2>&1
}
# run ORDER: 0 = passed, else the exit status
run() {
  SIMT_ORDER="$1" "$WORK/build/native/test/simt/moe_check_simt" --quick --only "$SECTIONS" >"$WORK/run.log" 2>&1
}

echo "[mutations] building the unmodified copy (CPU only: MOE_ROUTER_CUDA=OFF)"
cmake -S "$WORK/src" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DMOE_ROUTER_CUDA=OFF >"$WORK/cmake.log" 2>&1 \
  || { cat "$WORK/cmake.log"; exit 2; }
build || { tail -30 "$WORK/build.log"; exit 2; }
for o in "${ORDERS[@]}"; do
  run "$o" || { echo "[mutations] the unmodified sources fail in order $o:"; tail -20 "$WORK/run.log"; exit 2; }
done
echo "[mutations] unmodified: passes in ${ORDERS[*]}"

missed=0
for m in "${MUTATIONS[@]}"; do
  IFS='|' read -r name file expr <<<"$m"
  f="$WORK/src/native/$file"
  cp "$f" "$f.orig"
  perl -0pi -e "$expr" "$f"
  if cmp -s "$f" "$f.orig"; then
    echo "[mutations] MISSED  $name: the substitution no longer applies to native/$file (update this script)"
    missed=$((missed + 1))
    continue
  fi
  result=""
  caught=0
  if ! build; then
    result="does not compile"
  else
    for o in "${ORDERS[@]}"; do
      if run "$o"; then
        result+=" $o:passed"
      else
        rc=$?
        first=$(grep -m1 -E "FAIL|SIMT FAILURE" "$WORK/run.log" | cut -c1-110)
        result+=" $o:FAILED(exit $rc: $first)"
        caught=1
      fi
    done
  fi
  if ((caught)); then echo "[mutations] caught  $name:$result"; else
    echo "[mutations] MISSED  $name:$result"
    missed=$((missed + 1))
  fi
  mv "$f.orig" "$f"
done
build >/dev/null 2>&1 || true
if ((missed)); then
  echo "[mutations] $missed mutation(s) not caught"
  exit 1
fi
echo "[mutations] every mutation caught"
