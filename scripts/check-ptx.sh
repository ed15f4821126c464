#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Exactness that does not depend on build flags (issue 10 part 3): compiles the CUDA kernels
# (native/src/cuda/*.cu) and a consumer of every function of the public header moe_routing_math.h
# (native/test/ptx/routing_math_consumer.cu) to PTX under three sets of flags and fails on any
# floating-point instruction that would round differently from the CPU backend:
#   project    the library's own flags (-fmad=false -prec-div=true -ftz=false)
#   default    nvcc's defaults (-fmad=true: contraction allowed), what a consumer of the header gets
#   fast-math  -use_fast_math (contraction, approximate division and square root, flush to zero)
# Forbidden everywhere: fused or contracted float multiply-adds (fma.*.f32, mad.f32, ...) and
# approximate instructions (.approx, div.full). Also forbidden under project and default: .ftz.
# Under fast-math the explicitly rounded intrinsics keep every operation exact except that
# subnormals are flushed; the script counts those .ftz instructions and reports them (the header
# states that device code needs -ftz=false).
# Usage: scripts/check-ptx.sh [WORK_DIR]   (PTX files are kept there; default: a temporary folder)
# Environment: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), PTX_ARCH (default sm_80).
# Exit: 0 no forbidden instruction, 1 some (listed per file and flags), 2 no nvcc or a compile failure.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
ARCH="${PTX_ARCH:-sm_80}"
[[ -x "$NVCC" ]] || { echo "check-ptx: nvcc not found (set NVCC)" >&2; exit 2; }
WORK="${1:-}"
if [[ -z "$WORK" ]]; then
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"

sources=("$ROOT"/native/src/cuda/*.cu "$ROOT/native/test/ptx/routing_math_consumer.cu")
declare -A flavours=(
  [project]="-fmad=false -prec-div=true -ftz=false"
  [default]=""
  [fast-math]="-use_fast_math"
)
float_madd='\b(fma|mad)(\.[a-z]+)*\.(f16|f16x2|bf16|bf16x2|f32|f64)\b'
approx='\.approx\b|\bdiv\.full\b'
bad=0
for flavour in project default fast-math; do
  ftz_total=0
  clean=1
  for src in "${sources[@]}"; do
    name="$(basename "$src" .cu)"
    ptx="$WORK/$name.$flavour.ptx"
    # shellcheck disable=SC2086  # the flags are words
    if ! "$NVCC" -ptx -arch="$ARCH" -O3 --expt-relaxed-constexpr ${flavours[$flavour]} \
        -I"$ROOT/native/include" -I"$ROOT/native/src" "$src" -o "$ptx" 2>"$ptx.log"; then
      echo "check-ptx: $name ($flavour) does not compile:" >&2
      cat "$ptx.log" >&2
      exit 2
    fi
    pattern="$float_madd|$approx"
    [[ "$flavour" != fast-math ]] && pattern="$pattern|\.ftz\b"
    if grep -nE "$pattern" "$ptx" >"$ptx.bad"; then
      echo "check-ptx: $name ($flavour flags): $(wc -l <"$ptx.bad") forbidden instructions (count, opcode):"
      awk '{ print $2 }' "$ptx.bad" | sort | uniq -c | sort -rn | head -8
      bad=1
      clean=0
    fi
    [[ "$flavour" == fast-math ]] && ftz_total=$((ftz_total + $(grep -cE '\.ftz\b' "$ptx")))
  done
  if [[ $clean == 0 ]]; then
    :
  elif [[ "$flavour" == fast-math ]]; then
    echo "check-ptx: fast-math: no contraction, no approximation; $ftz_total .ftz instructions (subnormals" \
         "flushed: device code needs -ftz=false)"
  else
    echo "check-ptx: $flavour flags: no contraction, no approximation, no flush to zero"
  fi
done
exit $bad
