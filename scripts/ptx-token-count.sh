#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# PTX instructions per token of the routing and backward kernels for one configuration, the counts of the
# cost model in docs/cuda-design.md. The kernel's parameters are made compile-time constants in a copy of
# its source (so nvcc folds every option the configuration does not use and unrolls the loops over k and
# the slots) and markers around one token's body (and the weights pass) delimit what is counted. Counts
# are PTX, not SASS: a div.rn.f32 is one line here and about 9 SASS instructions on its fast path, a move
# between float and integer registers is a line here and nothing in SASS.
#
#   scripts/ptx-token-count.sh route    SRC E K C W DTYPE SCORE PRE   (route_reg_kernel<DTYPE, C, W>)
#   scripts/ptx-token-count.sh grouped  SRC E K C W DTYPE SCORE G GK TERMS BIAS
#                                                                      (route_grouped_kernel<DTYPE, C, W>)
#   scripts/ptx-token-count.sh decode   SRC E K C DTYPE SCORE GK TERMS BIAS
#                                                                      (route_grouped_decode_kernel<DTYPE, C>:
#                                                                       groups of 32, G = E / 32)
#   scripts/ptx-token-count.sh backward SRC E K DTYPE SCORE PRE NORM  (backward_kernel<DTYPE, 1>)
# DTYPE 0 fp32, 1 bf16, 2 fp16; SCORE 0 softmax, 1 sigmoid, 2 sqrtsoftplus; G groups, GK kept, TERMS values
# per group score (group_terms), BIAS 1 with a bias (ranks by R); SRC the kernel's .cu (another commit's
# copy to compare: git show REV:native/src/cuda/moe_route_kernel.cu > /tmp/old.cu; a kernel including
# another commit's headers: check that commit out in a worktree and pass its .cu).
# Prints "token N (...)" (one token's body) and, for route and grouped, "weights N (...)" (one pass: 32 / W
# tokens); for decode, "token" is warp 0's path (the critical path: every warp's part, then warp 0's), split
# into "all warps" (load, score, group score: what each warp runs) and "warp 0" (kept groups, selection,
# weights, stores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
kind="${1:?route|backward}"
fixed='p.groups = 1; p.group_topk = 1; p.bias = nullptr; p.biased = false; p.nonfinite = MOE_NONFINITE_PROPAGATE; p.minus_one_rows = MOE_MINUS_ONE_REJECT; p.scale = 1.0f; call_bad = nullptr;'
# The token loop's markers, shared by both routing kernels (the end: the token's last statement, which in
# moe_route_kernel.cu also closes the team kernel's loop, hence `tail`, the statement after it).
token_marks='s/(\n\s*)for \(int q = 0; q < P; \+\+q\) \{\n/$1#pragma unroll 1$1for (int q = 0; q < P; ++q) {\n      asm volatile("\/\/ CM_TOKEN_BEGIN");\n/;
    s/(\n\s*)(\/\/ Weights of the pass)/$1asm volatile("\/\/ CM_WEIGHTS_BEGIN");$1$2/;
    s/(\n\s*)(if \(nonfinite && lane == 0 && nf_rows\))/$1asm volatile("\/\/ CM_WEIGHTS_END");$1$2/;
    s/(\n\s*)(nf_rows \+= nf \? 1 : 0;\n\s*TAIL)/$1$2$1asm volatile("\/\/ CM_TOKEN_END");/'
if [[ "$kind" == route ]]; then
  src=$2 E=$3 K=$4 C=$5 W=$6 DT=$7 SCORE=$8 PRE=$9
  set_p="p.experts = $E; p.k = $K; p.score_fn = $SCORE; p.pre_softmax = $PRE; p.normalize = false; $fixed replay = nullptr; mask = nullptr; out_flags = nullptr;"
  perl -0pe 's/(route_reg_kernel\(Params p,.*?\{\n)/$1  '"$set_p"'\n/s;'"${token_marks/TAIL/if \\(grouped\\) __syncwarp\\(\\);}" "$src" >"$WORK/k.cu"
  entry="route_reg_kernelILi${DT}ELi${C}ELi${W}E"
  marks="CM_TOKEN_BEGIN CM_TOKEN_END CM_WEIGHTS_BEGIN CM_WEIGHTS_END"
elif [[ "$kind" == grouped ]]; then
  src=$2 E=$3 K=$4 C=$5 W=$6 DT=$7 SCORE=$8 G=$9 GK=${10} TERMS=${11} BIAS=${12}
  close='\}'
  # A bias: its pointer stays a run-time value, declared non-null so that no bias-less path is counted.
  bias_p='p.bias = nullptr; p.biased = false;'
  [[ "$BIAS" == 1 ]] && bias_p='p.biased = true; __builtin_assume(p.bias != nullptr);'
  set_p="p.experts = $E; p.k = $K; p.score_fn = $SCORE; p.pre_softmax = false; p.normalize = false; p.groups = $G; p.group_topk = $GK; p.group_terms = $TERMS; $bias_p p.nonfinite = MOE_NONFINITE_PROPAGATE; p.minus_one_rows = MOE_MINUS_ONE_REJECT; p.scale = 1.0f; call_bad = nullptr; replay = nullptr; mask = nullptr; out_flags = nullptr;"
  perl -0pe 's/(route_grouped_kernel\(Params p,.*?\{\n)/$1  '"$set_p"'\n/s;'"${token_marks/TAIL/$close}" "$src" >"$WORK/k.cu"
  entry="route_grouped_kernelILi${DT}ELi${C}ELi${W}E"
  marks="CM_TOKEN_BEGIN CM_TOKEN_END CM_WEIGHTS_BEGIN CM_WEIGHTS_END"
elif [[ "$kind" == decode ]]; then
  src=$2 E=$3 K=$4 C=$5 DT=$6 SCORE=$7 GK=$8 TERMS=$9 BIAS=${10}
  bias_p='p.bias = nullptr; p.biased = false;'
  [[ "$BIAS" == 1 ]] && bias_p='p.biased = true; __builtin_assume(p.bias != nullptr);'
  set_p="p.experts = $E; p.k = $K; p.score_fn = $SCORE; p.pre_softmax = false; p.normalize = false; p.groups = $((E / 32)); p.group_topk = $GK; p.group_terms = $TERMS; $bias_p p.nonfinite = MOE_NONFINITE_PROPAGATE; p.minus_one_rows = MOE_MINUS_ONE_REJECT; p.scale = 1.0f; call_bad = nullptr; replay = nullptr; mask = nullptr; out_flags = nullptr;"
  perl -0pe 's/(route_grouped_decode_kernel\(Params p,.*?\{\n)/$1  '"$set_p"'\n/s;
    s/(\n\s*)(if \(written_by_replay\(p, replay, mask, t\)\) return;[^\n]*\n)/$1$2  asm volatile("\/\/ CM_TOKEN_BEGIN");\n/;
    s/(\n\s*)(if \(g == 0\) \{\n)/$1asm volatile("\/\/ CM_WARP0_BEGIN");$1$2/;
    s/(\n\s*)(if \(nonfinite && lane == 0 && nf\))/$1asm volatile("\/\/ CM_TOKEN_END");$1$2/' "$src" >"$WORK/k.cu"
  entry="route_grouped_decode_kernelILi${DT}ELi${C}E"
  marks="CM_TOKEN_BEGIN CM_WARP0_BEGIN CM_TOKEN_END"
else
  src=$2 E=$3 K=$4 DT=$5 SCORE=$6 PRE=$7 NORM=$8
  set_p="p.experts = $E; p.k = $K; p.score_fn = $SCORE; p.pre_softmax = $PRE; p.normalize = $NORM; $fixed vec_in = 1; vec_out = 1;"
  perl -0pe 's/(backward_kernel\(Params p,.*?\{\n)/$1  '"$set_p"'\n/s;
    s/(for \(int64_t t = \(int64_t\)blockIdx.x \* kTeams \+ team; t < tokens; t \+= \(int64_t\)gridDim.x \* kTeams\) \{\n)/$1    asm volatile("\/\/ CM_TOKEN_BEGIN");\n/;
    s/(\n\s*)TeamT::sync\(\);\n  \}\n\}/$1TeamT::sync();$1asm volatile("\/\/ CM_TOKEN_END");\n  }\n}/' \
    "$src" >"$WORK/k.cu"
  entry="backward_kernelILi${DT}ELi1E"
  marks="CM_TOKEN_BEGIN CM_TOKEN_END"
fi
# The selection rounds (`for (int r = ...`, k constant here) fully unrolled, in the kernel's copy and in copies
# of the headers it includes (found first, beside it), so that each round is counted: nvcc unrolls a loop of
# 8 rounds only partly when its body is large, and a line of a loop's body is not an instruction per token.
cp "$ROOT"/native/src/cuda/*.cuh "$WORK/"
perl -0pi -e 's/(\n\s*)for \(int r = /$1#pragma unroll$1for (int r = /g' "$WORK/k.cu" "$WORK"/*.cuh
for m in "p.experts = $E;" $marks; do
  grep -q "$m" "$WORK/k.cu" || { echo "ptx-token-count: the source no longer matches this script ($m)" >&2; exit 2; }
done
"$NVCC" -std=c++17 -O3 -arch=sm_90 -fmad=false -prec-div=true -ftz=false -I"$ROOT/native/include" -I"$ROOT/native/src" \
  -I"$ROOT/native/src/cuda" -ptx "$WORK/k.cu" -o "$WORK/k.ptx"
python3 - "$WORK/k.ptx" "$entry" <<'PY'
import sys
lines = open(sys.argv[1]).read().split('\n')
start = next(i for i, l in enumerate(lines) if l.startswith('.entry') and sys.argv[2] in l)
end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith('.entry')), len(lines))
body = lines[start:end]
def part(name, a, b):
    if not any(a in l for l in body) or not any(b in l for l in body): return
    i = next(j for j, l in enumerate(body) if a in l)
    k = next(j for j, l in enumerate(body) if b in l)
    ins = [l.strip() for l in body[i + 1:k]]
    ins = [l for l in ins if l and not l.startswith(('$L', '//', '{', '}', '.'))]
    n = lambda t: sum(1 for l in ins if t in l)
    print(f"{name} {len(ins)} (redux {n('redux')}, shfl {n('shfl')}, div.rn {n('div.rn')}, ld.global {n('ld.global')}, "
          f"st.global {n('st.global')}, branches {n('bra')})")
part('token', 'CM_TOKEN_BEGIN', 'CM_TOKEN_END')
part('weights', 'CM_WEIGHTS_BEGIN', 'CM_WEIGHTS_END')
part('all warps', 'CM_TOKEN_BEGIN', 'CM_WARP0_BEGIN')
part('warp 0', 'CM_WARP0_BEGIN', 'CM_TOKEN_END')
PY
