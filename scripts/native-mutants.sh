#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Native mutation testing: plants each mutant below (a literal search/replace in one native/ file: CPU
# kernels and their lane math, the shared math header, training losses, token dropping, replay validation) in a temporary
# copy of the tree, one at a time, rebuilds the CPU library there (no CUDA, no SIMT harness) and runs
# the Java suites that cover it: the routing suites for math/cpu/validation/config mutants, the
# training suites for training/dropping ones. A mutant is caught when the tests fail. The unmodified
# copy must pass first; the worktree is never modified. CUDA kernel mutants are in
# scripts/simt-mutations.sh. Not part of `mvn verify` (about 3 minutes per mutant on a loaded 2-core machine).
#
#   scripts/native-mutants.sh [REGEX]    runs the mutants whose name matches REGEX (grep -E; default: all)
#
# Environment: MUTANT_TESTS overrides the test classes (surefire -Dtest), KEEP_WORK=1 keeps the copy.
# Exit status: 0 when every mutant was caught, 1 when one survived or no longer applies, 2 on setup errors.
# docs/testing.md has the last results.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FILTER="${1:-}"
ROUTING="ReplayValidationTest,ReferenceCasesTest,GoldenTest,GoldenV2Test,ReplayTest,RoutingOptionsTest,MoeRouterTest,BackendEquivalenceTest,FpEnvTest"
TRAINING="LossReferenceTest,TrainingTest,TrainingLossesTest,GoldenV2TrainingTest,TokenDroppingTest"
# The unmodified copy runs both sets; each mutant the set of its area.
WORK="$(mktemp -d)"
[[ "${KEEP_WORK:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT

# name <TAB> file under native/ <TAB> text to find (exactly once; \n is a newline) <TAB> replacement
MUTANTS="$(cat <<'EOF'
math: score_key keeps -0 below +0	include/moe_routing_math.h	float_to_bits(add_rn(r, 0.0f))	float_to_bits(r)
math: score_key ranks +-inf as NaN	include/moe_routing_math.h	<= 0x7f800000u)	< 0x7f800000u)
math: replay range check admits E	include/moe_routing_math.h	if (e < 0 || e >= experts) return MOE_REPLAY_OUT_OF_RANGE;	if (e < 0 || e > experts) return MOE_REPLAY_OUT_OF_RANGE;
math: replay duplicate check skips position k-1	include/moe_routing_math.h	for (int m = 0; m < j; ++m)	for (int m = 0; m < j && j < k - 1; ++m)
math: a row of -1 after its first entry counts as padding	include/moe_routing_math.h	if (idx[j] != -1) return false;	if (idx[j] != -1 && j > 0) return false;
math: sigmoid of -x	include/moe_routing_math.h	return div_rn(1.0f, add_rn(1.0f, exp_det(-x)));	return div_rn(1.0f, add_rn(1.0f, exp_det(x)));
math: softmax-post backward drops the scale	include/moe_routing_math.h	grad[idx[j]] = mul_rn(w_unscaled[j], sub_rn(mul_rn(p.scale, dw[j]), dot));	grad[idx[j]] = mul_rn(w_unscaled[j], sub_rn(dw[j], dot));
math: sigmoid backward uses S instead of S(1-S)	include/moe_routing_math.h	grad[idx[j]] = mul_rn(du[j], mul_rn(s, sub_rn(1.0f, s)));	grad[idx[j]] = mul_rn(du[j], s);
cpu: live weights not scaled	src/moe_cpu.cpp	for (int j = 0; j < k; ++j) out[j] = w[j] * p.scale;	for (int j = 0; j < k; ++j) out[j] = w[j];
cpu: ZERO policy zeroes the finite rows	src/moe_cpu.cpp	    if (zero && nf)\n      for (int j = 0; j < k; ++j) out[j] = 0.0f;	    if (zero && !nf)\n      for (int j = 0; j < k; ++j) out[j] = 0.0f;
cpu: non-finite row flags never written as 1	src/moe_cpu.cpp	if (c.out_flags) c.out_flags[t] = (uint8_t)nf;	if (c.out_flags) c.out_flags[t] = 0;
cpu: replay mask ignored by the row plan	src/moe_cpu.cpp	if (!replay || (mask && mask[t] == 0)) return RowPlan{nullptr};	if (!replay) return RowPlan{nullptr};
cpu: minus-one rows ARANGE routed live	src/moe_cpu.cpp	return RowPlan{p.minus_one_rows == MOE_MINUS_ONE_ARANGE ? arange : nullptr};	return RowPlan{nullptr};
cpu: weights normalised only when they should not be	src/moe_cpu.cpp	if (!p.normalize) return;	if (p.normalize) return;
cpu: 8-row replay lanes drop the scale	src/moe_cpu.cpp	x[j] = j < k ? _mm256_and_ps(_mm256_mul_ps(x[j], scale), keep) : zero;	x[j] = j < k ? _mm256_and_ps(x[j], keep) : zero;
validation: lane pre-check misses duplicates 4 apart	src/moe_cpu.cpp	for (int r = 1; r <= 4; ++r) bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(v, rot[r]));	for (int r = 1; r <= 3; ++r) bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(v, rot[r]));
lanes: exp floor correction inverted (8 and 16 lanes)	src/moe_cpu_lanes.inc	L::sub_where(tr, L::gt(tr, t), one)	L::sub_where(tr, L::lt(tr, t), one)
lanes: log exponent off by one (8 and 16 lanes)	src/moe_cpu_lanes.inc	L::set1_i(0xff)), L::set1_i(126))	L::set1_i(0xff)), L::set1_i(127))
validation: bad row named relative to its chunk	src/moe_cpu.cpp	if (bad >= 0) atomic_min(c.first_bad, bad + t0);	if (bad >= 0) atomic_min(c.first_bad, bad);
validation: masked-out rows checked, others skipped	src/moe_api.cpp	if (mask && mask[t] == 0) continue;	if (mask && mask[t] != 0) continue;
validation: duplicate positions swapped in the message	src/moe_api.cpp	(long long)row, r[j], m, j);	(long long)row, r[j], j, m);
config: k = 1 normalised	src/moe_api.cpp	p.normalize = c.top_k > 1 &&	p.normalize = c.top_k >= 1 &&
training: z-loss gradient without its factor 2	src/moe_cpu_training.cpp	x.zc = x.z ? (float)(2.0 * (double)c.z_coeff / (double)n) : 0.0f;	x.zc = x.z ? (float)(1.0 * (double)c.z_coeff / (double)n) : 0.0f;
training: aux coefficient over N instead of N^2	src/moe_cpu_training.cpp	a_aux = (double)c.aux_coeff * E / ((double)k * N * N);	a_aux = (double)c.aux_coeff * E / ((double)k * N);
training: sigmoid aux gradient without (1 - S)	src/moe_cpu_training.cpp	g[i] = g[i] + s[i] * (1.0f - s[i]) / r.z * (dA[i] - dot);	g[i] = g[i] + s[i] / r.z * (dA[i] - dot);
training: aux score sums keep only the last 256-row chunk	src/moe_cpu_training.cpp	p[i] += sums[w * E + i];	p[i] = sums[w * E + i];
training: sequence aux loss not averaged over B	src/moe_cpu_training.cpp	a_seq = (double)c.seq_aux_coeff * E / ((double)k * nq * nq * (double)B);	a_seq = (double)c.seq_aux_coeff * E / ((double)k * nq * nq);
dropping: capacity rounded down	src/moe_cpu_dropping.cpp	const double cap = ceil(	const double cap = floor(
dropping: position policy keeps every routed token	src/moe_cpu_dropping.cpp	const int64_t routed = std::min<int64_t>(count, x.cap);	const int64_t routed = count;
dropping: probs policy takes zero probs in key order	src/moe_cpu_dropping.cpp	(uint32_t)(keys[i] >> 32) > kZeroKey	(uint32_t)(keys[i] >> 32) >= kZeroKey
dropping: dropped count reports the kept count	src/moe_cpu_dropping.cpp	*out_dropped = tokens * k - kept;	*out_dropped = kept;
EOF
)"

echo "[native-mutants] copying the tree to $WORK"
mkdir -p "$WORK/tree"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK/tree") \
  || { echo "[native-mutants] copy failed"; exit 2; }
cd "$WORK/tree" || exit 2

# run_tests CLASSES
run_tests() {
  MOE_ROUTER_CUDA=OFF MOE_ROUTER_SIMT=OFF mvn -B -q -pl java test -Dtest="${MUTANT_TESTS:-$1}" \
    -Dsurefire.failIfNoSpecifiedTests=false >"$WORK/test.log" 2>&1
}

echo "[native-mutants] building and testing the unmodified copy (CPU only: MOE_ROUTER_CUDA=OFF)"
start=$SECONDS
run_tests "$ROUTING,$TRAINING" || { echo "[native-mutants] the unmodified copy fails:"; grep -E "ERROR|FAIL" "$WORK/test.log" | head -20; exit 2; }
echo "[native-mutants] unmodified: passes ($((SECONDS - start)) s)"

caught=0 survived=0 total=0
while IFS=$'\t' read -r name file old new; do
  [[ -z "$name" ]] && continue
  [[ -n "$FILTER" ]] && ! grep -qE "$FILTER" <<<"$name" && continue
  total=$((total + 1))
  f="native/$file"
  cp "$f" "$WORK/orig"
  if ! OLD="$old" NEW="$new" perl -0pi -e '
      my ($o, $n) = ($ENV{OLD}, $ENV{NEW});
      s/\\n/\n/g for ($o, $n);
      my $count = () = /\Q$o\E/g;
      die "found $count times\n" unless $count == 1;
      s/\Q$o\E/$n/;' "$f" 2>"$WORK/perl.log"; then
    echo "[native-mutants] SURVIVED $name: the text no longer matches native/$file ($(cat "$WORK/perl.log")); update this script"
    cp "$WORK/orig" "$f"
    survived=$((survived + 1))
    continue
  fi
  start=$SECONDS
  case "$name" in training:* | dropping:*) tests="$TRAINING" ;; *) tests="$ROUTING" ;; esac
  if run_tests "$tests"; then
    echo "[native-mutants] SURVIVED $name ($((SECONDS - start)) s)"
    survived=$((survived + 1))
  else
    why="$(grep -m1 -E '^\[ERROR\]   [A-Za-z]' "$WORK/test.log" | sed 's/^\[ERROR\] *//' | cut -c1-140)"
    [[ -z "$why" ]] && why="$(grep -m1 -E 'error:|ERROR' "$WORK/test.log" | cut -c1-140)"
    echo "[native-mutants] caught   $name ($((SECONDS - start)) s): $why"
    caught=$((caught + 1))
  fi
  cp "$WORK/orig" "$f"
done <<<"$MUTANTS"

echo "[native-mutants] total $total: caught $caught, survived $survived"
((survived == 0 && total > 0))
