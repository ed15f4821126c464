// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.Objects;

/**
 * Token dropping with a capacity factor (docs/semantics.md section 6; Megatron
 * {@code moe_expert_capacity_factor}, {@code moe_token_drop_policy}, {@code moe_pad_expert_input_to_capacity}):
 * immutable, validated when made. {@link MoeRouter#dropTokens} applies it to a live or replayed selection.
 *
 * <pre>{@code
 * TokenDropping drop = TokenDropping.of(1.25, DropPolicy.PROBS, false);
 * router.route(logits, T, idx, w, rows);
 * router.dropTokens(drop, idx, w, T, finalMap, finalProbs, kept, keptCounts);   // dispatch finalMap / finalProbs
 * TokenDropping.maskDropped(T, k, dW, kept, dW);                                // dropped entries get no gradient
 * router.backward(logits, T, idx, dW, rows, dL);
 * }</pre>
 *
 * <p>Traps: the capacity counts every token of the call, padding included (padding changes no drop
 * decision); with {@code padToCapacity} the final map holds rows that were not routed to the expert (prob
 * 0), so count tokens from the final map, not from the indices; a capacity {@code >= tokens} drops nothing.
 */
public final class TokenDropping {
  private final double capacityFactor;
  private final DropPolicy policy;
  private final boolean padToCapacity;

  private TokenDropping(double capacityFactor, DropPolicy policy, boolean padToCapacity) {
    this.capacityFactor = capacityFactor;
    this.policy = policy;
    this.padToCapacity = padToCapacity;
  }

  /** Same rule and text as moe_drop_tokens_host: the factor must be finite and > 0. */
  public static TokenDropping of(double capacityFactor, DropPolicy policy, boolean padToCapacity) {
    Objects.requireNonNull(policy, "policy");
    if (!(capacityFactor > 0) || !Double.isFinite(capacityFactor))
      throw new MoeRouterException(Status.INVALID_ARGUMENT, "invalid token dropping: capacity factor must be finite and > 0, got "
          + RouterConfig.Builder.gFormat(capacityFactor));
    return new TokenDropping(capacityFactor, policy, padToCapacity);
  }

  public double capacityFactor() {
    return capacityFactor;
  }

  public DropPolicy policy() {
    return policy;
  }

  public boolean padToCapacity() {
    return padToCapacity;
  }

  /**
   * Tokens each expert keeps: {@code ceil((tokens * k / experts) * capacityFactor)} in float64 (Python's
   * {@code math.ceil}, Megatron {@code get_capacity}), or {@code tokens} when that is larger (nothing dropped).
   */
  public long capacity(long tokens, int k, int experts) {
    if (tokens < 0 || k < 1 || experts < 1)
      throw MoeRouter.invalid("capacity: bad arguments (tokens=" + tokens + ", k=" + k + ", experts=" + experts + ")");
    double cap = Math.ceil(((double) (tokens * k) / experts) * capacityFactor);
    return cap >= tokens ? tokens : (long) cap;
  }

  /**
   * The gradient through kept entries only: {@code out[i] = kept[i] != 0 ? gradWeights[i] : 0} over [tokens, k]
   * ({@code out} may be {@code gradWeights}). A dropped entry gets exactly 0, even where the upstream
   * gradient is NaN. Then {@link MoeRouter#backward} as usual.
   */
  public static void maskDropped(int tokens, int k, float[] gradWeights, byte[] kept, float[] out) {
    long n = (long) tokens * k;
    if (tokens < 0 || k < 1) throw MoeRouter.invalid("maskDropped: bad shape [" + tokens + ", " + k + "]");
    MoeRouter.checkCapacity("gradWeights", gradWeights == null ? -1 : gradWeights.length, n);
    MoeRouter.checkCapacity("kept", kept == null ? -1 : kept.length, n);
    MoeRouter.checkCapacity("out", out == null ? -1 : out.length, n);
    for (int i = 0; i < n; i++) out[i] = kept[i] != 0 ? gradWeights[i] : 0f;
  }

  @Override
  public boolean equals(Object o) {
    if (!(o instanceof TokenDropping)) return false;
    TokenDropping d = (TokenDropping) o;
    return Double.compare(capacityFactor, d.capacityFactor) == 0 && policy == d.policy && padToCapacity == d.padToCapacity;
  }

  @Override
  public int hashCode() {
    return Objects.hash(capacityFactor, policy, padToCapacity);
  }

  @Override
  public String toString() {
    return "TokenDropping{capacityFactor=" + capacityFactor + ", policy=" + policy
        + (padToCapacity ? ", padToCapacity" : "") + "}";
  }
}
