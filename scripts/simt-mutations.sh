#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Shows that the SIMT harness can fail: plants known bugs in a temporary copy of the CUDA sources,
# rebuilds moe_check_simt there and expects a failing run for each (docs/cuda-harness.md has the
# last results). The unmodified copy must pass first. Not part of `mvn verify` (a few minutes).
#
#   scripts/simt-mutations.sh [ORDER...]      orders: forward reverse random:SEED (default: forward reverse)
#
# Environment: SIMT_MUTATION_SECTIONS (default "sweep,invalid,goldens,edges,grouped,training"; the goldens section
# runs java/src/test/goldens and goldens_v2), SIMT_MUTATION_FILTER (an extended regex: only the mutations
# whose name matches), KEEP_WORK=1 keeps the temporary tree.
# Exit status: 0 when every mutation was caught in at least one order, 1 otherwise, 2 on setup errors.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORDERS=("$@")
((${#ORDERS[@]})) || ORDERS=(forward reverse)
SECTIONS="${SIMT_MUTATION_SECTIONS:-sweep,invalid,goldens,edges,grouped,training}"
FILTER="${SIMT_MUTATION_FILTER:-}"
WORK="$(mktemp -d)"
[[ "${KEEP_WORK:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src"
cp -r "$ROOT/CMakeLists.txt" "$ROOT/native" "$WORK/src/"

# name | file under native/ | perl substitution (applied once; it must change the file)
MUTATIONS=(
  "lane index: k-term sums (weights, normalisers) read lane j+1|src/cuda/moe_cuda_common.cuh|s/__shfl_sync\(kFull, v0, base \+ j\)/__shfl_sync(kFull, v0, base + j + 1)/"
  "lane index: backward dot products read lane j^1 (same values, other order)|src/cuda/moe_cuda_common.cuh|s/__shfl_sync\(kFull, prod0, base \+ j\)/__shfl_sync(kFull, prod0, base + (j ^ 1))/"
  "removed __syncthreads: block max before reading the per-warp maxima|src/cuda/moe_cuda_common.cuh|s/(sh->u64\[warp\] = v;\n)(\s*)__syncthreads\(\);\n/\$1/"
  "removed __syncthreads: softmax sum broadcast|src/cuda/moe_cuda_common.cuh|s/if \(TW > 1\) \{\n(\s*)__syncthreads\(\);\n/if (TW > 1) {\n/"
  "sqrtsoftplus: the second entry (k > 32) scored by sigmoid|src/cuda/moe_cuda_common.cuh|s/u1 = two \? sqrtsoftplus_det\(l1\)/u1 = two ? sigmoid_det(l1)/"
  "softmax pre + bias: weights from R = P + b instead of P|src/cuda/moe_route_kernel.cu|s/if \(pre && !p.biased\) \{/if (pre) {/"
  "normalize switch ignored (k > 1 decides, as before v2)|src/cuda/moe_cuda_common.cuh|s/  if \(p.normalize\) \{\n    const float denom/  if (k > 1) {\n    const float denom/"
  "group scores: TOP2_SUM and MAX summed as TOPK_SUM|src/cuda/moe_route_kernel.cu|s/per = p.per_group\(\)/per = p.k \/ p.group_topk/"
  "ranking key: R without a bias (saturation ties by index)|src/cuda/moe_route_kernel.cu|s/const float\* kk = p.rank_by_logit\(\) \? lg : sc;/const float* kk = sc;/"
  "ZERO: the routing kernel writes the first entry's weight|src/cuda/moe_route_kernel.cu|s/out_w\[t \* k \+ lane\] = zero \? 0.0f : mul_rn\(w0, p.scale\);/out_w[t * k + lane] = mul_rn(w0, p.scale);/"
  "row flags: the replay kernel writes flagged rows only|src/cuda/moe_replay_kernel.cu|s/if \(out_flags\) out_flags\[t\] = nf \? 1 : 0;/if (out_flags && nf) out_flags[t] = 1;/"
  "ZERO: the backward ignores the forward's row flags|src/cuda/moe_backward_kernel.cu|s/bool zero = zero_nonfinite && flags\[t\] != 0;/bool zero = false;/"
  "ZERO, softmax pre backward: each thread's own flag, not the team's|src/cuda/moe_backward_kernel.cu|s/zero = TeamT::any\(nf\) \|\| zero;/zero = nf || zero;/"
  "ERROR scan: a lane reports its last non-finite logit of a whole row|src/cuda/moe_nonfinite_kernel.cu|s/mine = \(unsigned\)i;\n(\s*)break;/mine = (unsigned)i;/"
  "ERROR scan: a replayed row reports its last non-finite entry|src/cuda/moe_nonfinite_kernel.cu|s/const int first = j0 \+ __ffs\(bad\) - 1;/const int first = j0 + 31 - __clz(bad);/"
  "ERROR scan: stops at any verdict (a block starting late misses a lower row)|src/cuda/moe_nonfinite_kernel.cu|s/if \(\*verdict < kNonfiniteTag\) return;/if (*verdict != kNoBadRow) return;/"
  "-1 rows: ARANGE rows routed live and LIVE rows replayed (routing kernel)|src/cuda/moe_route_kernel.cu|s/replay\[t \* k\] == -1 && p.minus_one_rows == MOE_MINUS_ONE_ARANGE/replay[t * k] == -1 \&\& p.minus_one_rows == MOE_MINUS_ONE_LIVE/"
  "-1 rows: LIVE rows replayed as 0..k-1 (replay kernel)|src/cuda/moe_replay_kernel.cu|s/if \(p.minus_one_rows == MOE_MINUS_ONE_ARANGE\) \{/if (p.minus_one_rows != MOE_MINUS_ONE_REJECT) {/"
  "-1 rows: rejected by the validation under LIVE and ARANGE|src/cuda/moe_replay_kernel.cu|s/if \(minus_one_ok && is_minus_one_row\(idx \+ t \* k, k\)\) continue;//"
  "section 6, valid tokens: the padding mask ignored|src/cuda/moe_training_kernel.cu|s/bool v = !\(padding && padding\[t\]\);/bool v = true;/"
  "section 6, idx counts: the valid mask ignored|src/cuda/moe_training_kernel.cu|s/if \(valid && !valid\[t\]\) continue;\n(\s*)for \(int j = 0; j < k; \+\+j\) atomicAdd/for (int j = 0; j < k; ++j) atomicAdd/"
  "section 6, losses: ZERO rows with a non-finite logit stay valid|src/cuda/moe_training_kernel.cu|s/if \(v && a.zero\) v = row_finite\(ld, E\);//"
  "section 6, losses: items merged in reverse order (same sums, other rounding)|src/cuda/moe_training_kernel.cu|s/for \(int64_t item = 0; item < s.items; \+\+item\) \{\n(\s*)p = __dadd_rn\(p, w.isum\[item \* E \+ i\]\);/for (int64_t item = s.items - 1; item >= 0; --item) {\n\1p = __dadd_rn(p, w.isum[item * E + i]);/"
  "section 6, losses: z-loss gradient without its factor 2|src/cuda/moe_training_kernel.cu|s/__dmul_rn\(2.0, \(double\)a.z_coeff\)/(double)a.z_coeff/"
  "section 6, losses: BS rows take the SB sequence in the gradient|src/cuda/moe_training_kernel.cu|s/a.layout == MOE_SEQ_BS \? t \/ s.seq_len : t % s.batch/t % s.batch/"
  "section 6, drop position: cap + 1 entries kept|src/cuda/moe_dropping_kernel.cu|s/keep = p.pos\[n\] < a.cap;/keep = p.pos[n] <= a.cap;/"
  "section 6, drop probs: non-routed tokens at prob 0 never above a routed 0|src/cuda/moe_dropping_kernel.cu|s/sk == zero_key \? t - p.pos\[n\] : 0/sk == zero_key ? 0 : 0/"
  "section 6, drop probs pad: the routed zeros before a padding slot ignored|src/cuda/moe_dropping_kernel.cu|s/p.above\[e\] \+ zeros_before \+ nonrouted_before < a.cap/p.above[e] + nonrouted_before < a.cap/"
  "section 6, drop: inclusive chunk bases in the counting sort|src/cuda/moe_dropping_kernel.cu|s/p.cc\[c \* a.experts \+ e\] = \(int32_t\)run;\n(\s*)run \+= v;/run += v;\n\1p.cc[c * a.experts + e] = (int32_t)run;/"
  "section 6, drop: the call verdict ignored (invalid rows written)|src/cuda/moe_dropping_kernel.cu|s/return call_bad && \*call_bad != kNoBadRow;/return false;/"
  "one-block validation: a rejected call's non-finite count is zeroed|src/cuda/moe_replay_kernel.cu|s/atomicMin\(err_slot, first\);\n(\s*)else if \(counter\)/atomicMin(err_slot, first);\n\1if (counter)/"
  "one-block validation: the verdict is not reset by a valid call|src/cuda/moe_replay_kernel.cu|s/\*call_bad = first;/if (first != kNoBadRow) *call_bad = first;/"
  "register path: a tie of keys goes to the higher expert index|src/cuda/moe_route_reg.cuh|s/__reduce_min_sync\(kFull, has \? own\[0\] : ~0u\)/__reduce_max_sync(kFull, has ? own[0] : 0u)/"
  "register path: the winner keeps its first key (equal-key rounds)|src/cuda/moe_route_reg.cuh|s/const bool pop = has && own\[0\] == w;/const bool pop = false;/"
  "register path: every lane holding the round's key pops (equal keys)|src/cuda/moe_route_reg.cuh|s/const bool pop = has && own\[0\] == w;/const bool pop = has;/"
  "register path, packed keys: the winner keeps its first key|src/cuda/moe_route_reg.cuh|s/pop_if<C>\(key, key\[0\] == win, 0u\);  \/\/ one lane: the keys are distinct/pop_if<C>(key, false, 0u);/"
  "register path, sorted keys: the 4-slot network misses its last comparator|src/cuda/moe_route_reg.cuh|s/\{0, 2\}, \{1, 3\}, \{1, 2\}\},/{0, 2}, {1, 3}, {0, 0}},/"
  "register path, sorted keys: the 8-slot network misses its last comparator|src/cuda/moe_route_reg.cuh|s/\{3, 4\}, \{5, 6\}\}\};/{3, 4}, {0, 0}}};/"
  "register path, sorted keys: the 2-slot network is empty|src/cuda/moe_route_reg.cuh|s/\{\{0, 1\}\},/{{0, 0}},/"
  "register path, stable sort: equal keys exchanged|src/cuda/moe_route_reg.cuh|s/const bool swap = v\[a \+ 1\] > v\[a\];/const bool swap = v[a + 1] >= v[a];/"
  "register path, stable sort: the expert index does not travel with its key|src/cuda/moe_route_reg.cuh|s/idx\[a\] = swap \? idx\[a \+ 1\] : ia;//"
  "register path: rounds 32.. record into the first entry|src/cuda/moe_route_reg.cuh|s/wk1 = lane == r - 32 \? win : wk1;/wk0 = lane == r - 32 ? win : wk0;/"
  "register path, decoded logit: negatives restored as positives|src/cuda/moe_route_reg.cuh|s/\? s \^ 0x80000000u : ~s & 0xffffff00u/? s ^ 0x80000000u : s ^ 0x80000000u/"
  "register path, decoded logit: a negative's low byte left set|src/cuda/moe_route_reg.cuh|s/\? s \^ 0x80000000u : ~s & 0xffffff00u/? s ^ 0x80000000u : ~s/"
  "register path, 4 tokens per pass: packed keys not moved to their segment|src/cuda/moe_route_reg.cuh|s/wk0 = __shfl_sync\(kFull, wk0, sub\);//"
  "multi-block validation: the accumulator not restored (the next call sees the old row)|src/cuda/moe_replay_kernel.cu|s/atomicExch\(acc, kNoBadRow\)/*acc/"
  "multi-block validation: a rejected call's non-finite count is zeroed|src/cuda/moe_replay_kernel.cu|s/atomicMin\(err_slot, bad\);\n(\s*)else if \(counter\)/atomicMin(err_slot, bad);\n\1if (counter)/"
  "multi-block validation: the first block to finish decides|src/cuda/moe_replay_kernel.cu|s/gridDim.x - 1\) == gridDim.x - 1;/gridDim.x - 1) == 0;/"
  "multi-block validation: a block's own first bad row never folded in|src/cuda/moe_replay_kernel.cu|s/if \(first != kNoBadRow\) atomicMin\(acc, first\);//"
  "backward: the 16-byte zero fill misses the last chunk|src/cuda/moe_backward_kernel.cu|s/for \(int c = tid; c < E \/ 4; c \+= N\) b4\[c\]/for (int c = tid; c < E \/ 4 - 1; c += N) b4[c]/"
  "register path: experts of dropped groups stay eligible|src/cuda/moe_route_kernel.cu|s/if \(!\(\(kept >> \(\(grp >> \(8 \* m\)\) & 0xffu\)\) & 1ull\)\) key\[m\] = 0u;/(void)kept;/"
  "register path: ranking key R without a bias|src/cuda/moe_route_kernel.cu|s/score_key\(by_logit \? x\[m\] : r\)/score_key(r)/"
  "register path: the bias of the neighbouring expert|src/cuda/moe_route_kernel.cu|s/add_rn\(s, sh_bias\[i\]\)/add_rn(s, sh_bias[i ^ 1 < E ? i ^ 1 : i])/"
  "register path: softmax pre weights from the logits, not the exps|src/cuda/moe_route_kernel.cu|s/if \(pre\) x\[m\] = ex\[m\];//"
  "register path: the second entry (k > 32) gathered from the first's lane|src/cuda/moe_route_reg.cuh|s/__shfl_sync\(kFull, x\[m\], w1 & 31\)/__shfl_sync(kFull, x[m], w0 \& 31)/"
  "register path, packed keys: the index in the low byte as is (a tie goes to the higher index)|src/cuda/moe_route_reg.cuh|s/\| \(unsigned\)\(255 - i\)/| (unsigned)i/; s/return 255 - \(int\)\(key & 0xffu\);/return (int)(key \& 0xffu);/"
  "register path, 4 tokens per pass: entries not moved to their token's segment|src/cuda/moe_route_reg.cuh|s/w0 = __shfl_sync\(kFull, w0, sub\);//"
  "register path, 4 tokens per pass: the softmax pre denominator left at 1|src/cuda/moe_route_reg.cuh|s/      s.row_sum = row_sum;\n      s.row_nf = nf;/      s.row_nf = nf;/"
  "register path: -1 rows: ARANGE rows routed live|src/cuda/moe_route_kernel.cu|s/minus_one && p.minus_one_rows == MOE_MINUS_ONE_ARANGE/minus_one \&\& p.minus_one_rows == MOE_MINUS_ONE_LIVE/"
  "grouped path: a tie of group scores keeps the higher group|src/cuda/moe_route_grouped_kernel.cu|s/\(o == gkey && h < lane\)/(o == gkey \&\& h > lane)/"
  "grouped path: a group's top value counted once however many lanes hold it|src/cuda/moe_route_grouped_kernel.cu|s/const int n = __popc\(holders\) < left \? __popc\(holders\) : left;/const int n = 1 + 0 * left;/"
  "grouped path: the holder of a group's top value keeps it for the next term|src/cuda/moe_route_grouped_kernel.cu|s/c\[m\] = 0u;\n(\s*)dropped = true;/dropped = true;/"
  "grouped path, one slot per group: a top value held by one lane taken twice|src/cuda/moe_route_grouped_kernel.cu|s/\(holders & \(holders - 1u\)\) \? m1 - 1u : next - 1u/(holders != 0u) ? m1 - 1u : next - 1u/"
  "grouped path, one slot per group: TOP2_SUM summed as MAX|src/cuda/moe_route_grouped_kernel.cu|s/if \(per == 2\) \{  \/\/ the second term/if (per == 3) {  \/\/ the second term/"
  "grouped path: experts of dropped groups stay eligible|src/cuda/moe_route_grouped_kernel.cu|s/if \(!\(\(kept >> \(\(slot_group >> \(4 \* m\)\) & 15u\)\) & 1u\)\) key\[m\] = 0u;/(void)kept;/"
  "grouped path: Gk + 1 groups kept|src/cuda/moe_route_grouped_kernel.cu|s/lane < G && before < Gk\)/lane < G \&\& before <= Gk)/"
  "grouped path: a negative R's key read back as its magnitude|src/cuda/moe_route_grouped_kernel.cu|s/\? \(key & 0x7fffffffu\) : ~key\)/? (key \& 0x7fffffffu) : (~key \& 0x7fffffffu))/"
  "grouped path: the slot -> group table of one slot per group|src/cuda/moe_route_grouped_kernel.cu|s/slot_group \|= \(unsigned\)\(m \/ spg\) << \(4 \* m\);/slot_group |= (unsigned)m << (4 * m);/"
  "grouped path: ranking key R without a bias|src/cuda/moe_route_grouped_kernel.cu|s/key\[m\] = by_logit \? \(m < slots \? score_key\(x\[m\]\) \+ 1u : 0u\) : kr\[m\];/key[m] = kr[m];/"
  "grouped path: -1 rows under ARANGE routed live|src/cuda/moe_route_grouped_kernel.cu|s/p.minus_one_rows == MOE_MINUS_ONE_ARANGE\);/p.minus_one_rows == MOE_MINUS_ONE_REJECT);/"
  "grouped path (shared weights pass): ZERO writes the weights of flagged rows|src/cuda/moe_route_reg.cuh|s/const bool zero = p.nonfinite == MOE_NONFINITE_ZERO && s.row_nf;/const bool zero = false;/"
  "grouped path: the row flag from lane 0's slots only|src/cuda/moe_route_grouped_kernel.cu|s/nf = __any_sync\(dev::kFull, nf\) != 0;/nf = __shfl_sync(dev::kFull, nf, 0);/"
  "grouped path, 4 tokens per pass: every token's entries taken by the first segment|src/cuda/moe_route_grouped_kernel.cu|s/dev::take_entries<C, W>\(pass, q, lane,/dev::take_entries<C, W>(pass, 0, lane,/"
  "shared selection: rounds 0..30 only before the second entry's (k > 32)|src/cuda/moe_route_reg.cuh|s/const int k0 = k < 32 \? k : 32;/const int k0 = k < 32 ? k : 31;/"
  "shared selection, packed keys: no + 0x100 (a NaN logit keys as taken; its logit decoded wrong)|src/cuda/moe_route_reg.cuh|s/\(\(score_key\(x\) & 0xffffff00u\) \+ 0x100u\)/(score_key(x) \& 0xffffff00u)/"
  "shared entries, one token per pass: the row flag not taken|src/cuda/moe_route_reg.cuh|s/s.e1 = w1;\n(\s*)s.row_sum = row_sum;\n(\s*)s.row_nf = nf;/s.e1 = w1;\n\1s.row_sum = row_sum;/"
  "shared weights pass: every segment writes the pass's first token|src/cuda/moe_route_reg.cuh|s/const int64_t t = base \+ lane \/ W;/const int64_t t = base;/"
  "grouped decode: a tie of group scores keeps the higher group|src/cuda/moe_route_grouped_kernel.cu|s/\(o == gkey && h < lane\)\) \? 1 : 0;\n(\s*)\}\n(\s*)unsigned kept/(o == gkey \&\& h > lane)) ? 1 : 0;\n\1}\n\2unsigned kept/"
  "grouped decode: a group's top value kept by its holders for the next term|src/cuda/moe_route_grouped_kernel.cu|s/left -= n;\n(\s*)if \(best == win\) best = 0u;/left -= n;/"
  "grouped decode: the bias of the next expert|src/cuda/moe_route_grouped_kernel.cu|s/__ldg\(p.bias \+ i\) : 0.0f;/__ldg(p.bias + (i ^ 1)) : 0.0f;/"
  "grouped decode: the row flag from warp 0's experts only|src/cuda/moe_route_grouped_kernel.cu|s/const bool nf = __syncthreads_or\(!is_finite\(x\)\) != 0;/__syncthreads();\n  const bool nf = g == 0 \&\& __any_sync(dev::kFull, !is_finite(x));/"
  "grouped decode: kept groups' slots in descending group order (ties to the higher expert)|src/cuda/moe_route_grouped_kernel.cu|s/const int gm = kept \? __ffs\(kept\) - 1 : 0;/const int gm = kept ? 31 - __clz(kept) : 0;/;s/kept &= kept - 1u;/kept \&= ~(1u << gm);/"
  "grouped decode: a slot's winner not mapped back to its group's expert|src/cuda/moe_route_grouped_kernel.cu|s/pass.e0 = 32 \* \(int\)\(\(grp >> \(4 \* \(w0 >> 5\)\)\) & 15u\) \+ \(w0 & 31\);/pass.e0 = w0;/"
  "grouped decode: the grid capped at one block per SM (no grid-stride loop: the later tokens never routed)|src/cuda/moe_route_grouped_kernel.cu|s/\(unsigned\)tokens, p.experts, 0,/(unsigned)(tokens < sm_count ? tokens : sm_count), p.experts, 0,/"
  "grouped path: the selection with the register path's packed rule for fp32 logits (low bits overwritten)|src/cuda/moe_route_grouped_kernel.cu|s/const bool packed = DT != MOE_DTYPE_F32 && by_logit;/const bool packed = by_logit;/"
)

build() {
  cmake --build "$WORK/build" --target moe_check_simt -j "$(nproc)" >"$WORK/build.log" 2>&1
}
# run ORDER: 0 = passed, else the exit status
run() {
  SIMT_ORDER="$1" "$WORK/build/native/test/simt/moe_check_simt" --quick --only "$SECTIONS" \
    --goldens "$ROOT/java/src/test/goldens" --goldens "$ROOT/java/src/test/goldens_v2" >"$WORK/run.log" 2>&1
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
  [[ -z "$FILTER" || "$name" =~ $FILTER ]] || continue
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
  touch "$f"  # the restored file is older than the objects built from its mutant: make must rebuild them
done
build >/dev/null 2>&1 || true
if ((missed)); then
  echo "[mutations] $missed mutation(s) not caught"
  exit 1
fi
echo "[mutations] every mutation caught"
